"""Policy.learn_epochs: minibatch SGD at the seam. JAX runs a batch's minibatches as one compiled loop;
the bits must be those of one call per minibatch (and the Python loop is kept where minibatches are
uneven or a recorder watches each call)."""
import pytest

pytest.importorskip("jax")

import unirl  # noqa: E402
import unirl.policy  # noqa: E402


def _run(compiled_loops: bool, config: dict, iterations: int = 3):
    unirl.policy.clear_compiled()  # trace counts of this run's policy alone
    algo = unirl.build("PPO", {"env": "CartPole-v1", "framework": "jax", "seed": 0, **config})
    try:
        algo.policy.adapter.compiled_loops = compiled_loops  # this policy's adapter instance only
        for _ in range(iterations):
            algo.train()
        p = algo.policy
        return algo.weights_digest(), p.adapter.trace_count(p._learn_step) if p._learn_step else 0, \
            p.adapter.trace_count(p._learn_steps) if p._learn_steps else 0
    finally:
        algo.stop()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("config", [{}, {"minibatch_size": 64, "num_epochs": 5}], ids=["defaults", "tuned"])
def test_one_compiled_loop_gives_the_bits_of_one_call_per_minibatch(config):
    looped, single_traces, _ = _run(False, config)
    scanned, single_unused, loop_traces = _run(True, config)
    assert scanned == looped
    assert single_traces == 1 and (single_unused, loop_traces) == (0, 1)


@pytest.mark.timeout(300)
def test_uneven_minibatches_take_the_python_loop():
    import numpy as np

    from unirl import sample_batch as sb

    digests = []
    for compiled_loops in (True, False):
        unirl.policy.clear_compiled()
        algo = unirl.build("PPO", {"env": "CartPole-v1", "framework": "jax", "seed": 0})
        try:
            p = algo.policy
            p.adapter.compiled_loops = compiled_loops
            rows = algo.postprocess(algo.sampler.sample(p.get_flat_weights()))
            keys = (sb.OBS, sb.ACTIONS, sb.LOGP, sb.ADVANTAGES, sb.VALUE_TARGETS)
            rows = {k: rows[k][:250] for k in keys}  # minibatches of 96: 96, 96, 58
            p.learn_epochs(rows, algo.hyperparameters(), 2, 96, np.random.default_rng(0))
            assert p._learn_steps is None and p.adapter.trace_count(p._learn_step) == 2  # the full and the short one
            digests.append(algo.weights_digest())
        finally:
            algo.stop()
    assert digests[0] == digests[1]
