"""Actions for the same observations are bit-identical whatever batch they arrive in, and wherever in it.

A worker acts on its share of the envs, so env k arrives in a batch of 1, 2, 3, ... rows, at
another offset when the envs are split over another number of workers; a run's numbers may not
depend on that split (docs/determinism.md). Each framework is skipped, with the reason, only if
it is not installed.
"""
import importlib.util

import numpy as np
import pytest

from unirl.conformance import framework_checks as fc

SIZES = (1, 2, 3, 7, 64, 600)
SHIFTS = (0, 1, 3, 5, 63, 64, 65, 130)


def _param(framework, module):
    missing = importlib.util.find_spec(module) is None
    return pytest.param(framework, marks=pytest.mark.skipif(
        missing, reason=f"{module} is not installed (pip install 'unirl[{framework}]')"))


FRAMEWORKS = [_param("torch", "torch"), _param("tf", "tensorflow"), _param("jax", "jax")]


def _policy(framework, obs_dim=4, num_outputs=2, hidden=(64, 64), seed=0):
    from unirl.distributions import Categorical
    from unirl.models import ActorCritic, ModelConfig
    from unirl.policy import Policy

    module = ActorCritic(obs_dim, Categorical(num_outputs), ModelConfig(hidden_sizes=hidden))
    return Policy(fc.load_adapter(framework), module, module.init_params(seed))


def _forward(policy, obs):
    out = policy.forward(obs)
    return out["dist_inputs"], out["values"]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_actions_and_logits_are_the_same_in_any_batch_at_any_position(framework):
    policy = _policy(framework)
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((600, 4)).astype(np.float32)
    filler = rng.standard_normal((max(SHIFTS), 4)).astype(np.float32)
    uniforms = rng.random((600, 1))
    # every row alone, one observation per call: the reference
    alone = np.concatenate([policy.policy_outputs(obs[i:i + 1]) for i in range(600)])
    actions_alone = np.concatenate([policy.compute_actions(obs[i:i + 1], uniforms[i:i + 1]) for i in range(600)])
    # uniforms on the CDF boundary of each row's own logits: any last-bit change flips the action
    probs = np.exp(alone - alone.max(axis=1, keepdims=True))
    boundary = (probs[:, :1] / probs.sum(axis=1, keepdims=True)).astype(np.float64)
    for n in SIZES:
        for s in SHIFTS:
            if n == 600 and s not in (0, 1, 65):
                continue
            batch = np.concatenate([filler[:s], obs[:n]])
            out = policy.policy_outputs(batch)[s:]
            assert out.tobytes() == alone[:n].tobytes(), f"{framework}: {n} rows at offset {s} differ from the rows alone"
            u = np.concatenate([np.full((s, 1), 0.5), uniforms[:n]])
            assert np.array_equal(policy.compute_actions(batch, u)[s:], actions_alone[:n])
            u = np.concatenate([np.full((s, 1), 0.5), boundary[:n]])
            want = np.concatenate([policy.compute_actions(obs[i:i + 1], boundary[i:i + 1]) for i in range(n)]) \
                if n <= 7 else None
            if want is not None:
                assert np.array_equal(policy.compute_actions(batch, u)[s:], want)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_learner_forward_rows_do_not_depend_on_batch_or_position(framework):
    """`Policy.forward` (the learner's log-probability inputs and values), sizes 1..600 and shifted rows."""
    findings = fc.check_row_invariance(framework, batch_sizes=(1, 2, 3, 7, 63, 64, 65, 127, 128, 129, 600),
                                       shifts=(0, 1, 5, 63, 64, 65), shifted_sizes=(1, 3, 64))
    bad = fc.failures(findings)
    assert not bad, "\n".join(str(f) for f in bad)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_wide_layers_and_one_column_heads_are_row_invariant(framework):
    """Other shapes than the default model: obs_dim 3 (k < 4), 256-unit layers, a 7-way head."""
    policy = _policy(framework, obs_dim=3, num_outputs=7, hidden=(256, 256), seed=1)
    obs = np.random.default_rng(1).standard_normal((200, 3)).astype(np.float32)
    alone_out = np.concatenate([_forward(policy, obs[i:i + 1])[0] for i in range(200)])
    alone_v = np.concatenate([_forward(policy, obs[i:i + 1])[1] for i in range(200)])
    for n in (2, 7, 64, 200):
        out, v = _forward(policy, obs[:n])
        assert out.tobytes() == alone_out[:n].tobytes() and v.tobytes() == alone_v[:n].tobytes(), n
    for s in (1, 33, 64):
        out, v = _forward(policy, np.concatenate([obs[-s:], obs[:50]]))
        assert out[s:].tobytes() == alone_out[:50].tobytes() and v[s:].tobytes() == alone_v[:50].tobytes(), s
