"""JAX's matmul in 8-row blocks gives the bits of 64-row blocks (so acting padded to 8 rows acts as the learner computes)."""
import numpy as np
import pytest

jax_adapter = pytest.importorskip("unirl.frameworks.jax", reason="jax is not installed (pip install 'unirl[jax]')")


@pytest.mark.parametrize("k,n", [(4, 64), (64, 1)])
def test_jax_8_row_blocks_equal_64_row_blocks(k, n):
    import jax

    from unirl.frameworks.base import MATMUL_ROW_BLOCK

    rng = np.random.default_rng(k * 100 + n)
    a = rng.standard_normal((130, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    small = jax.jit(lambda x: jax_adapter._row_stable_matmul(x, b, block=jax_adapter.ROW_BLOCK))
    big = jax.jit(lambda x: jax_adapter._row_stable_matmul(x, b, block=MATMUL_ROW_BLOCK))
    for rows in (1, 9, 65):
        got, want = np.asarray(small(a[:rows])), np.asarray(big(a[:rows]))
        assert got.tobytes() == want.tobytes(), f"{rows} rows, [{k}, {n}]: 8-row blocks differ from 64-row blocks"


def test_jax_policy_pads_acting_to_8_rows_and_the_learner_to_64():
    from unirl.distributions import Categorical
    from unirl.models import ActorCritic, ModelConfig
    from unirl.policy import Policy

    module = ActorCritic(4, Categorical(2), ModelConfig())
    policy = Policy(jax_adapter.Adapter(), module, module.init_params(0))
    assert policy._acting_rows_multiple == 8 and policy._rows_multiple == 64
    obs = np.random.default_rng(0).standard_normal((70, 4)).astype(np.float32)
    for rows in (1, 3, 70):  # acting pads to 8 and 72 rows, the learner's forward to 64 and 128
        acting = policy.policy_outputs(obs[:rows])
        assert acting.tobytes() == policy.forward(obs[:rows])["dist_inputs"].tobytes(), rows
