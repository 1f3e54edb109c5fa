"""SAC and TD3 (DDPG as a TD3 config) and the seam they use: several learners in one policy, Polyak updates.

The squashed Gaussian's log-probability against a float64 NumPy reference (values and finite-difference
gradients), the Polyak update exactly, each learner changing only its own parameters, the twin-Q target
against a hand loop, the temperature's gradient sign, the smoothing noise the same for every worker count,
exact resume with the replay buffer and the noise state, short learning runs, and the errors."""
import numpy as np
import pytest

import unirl
from unirl import sample_batch as sb
from unirl.algorithms.dqn import DISCOUNTS, NEXT_OBS
from unirl.algorithms.sac import NEXT_NOISE, NOISE, SAC, alpha_loss
from unirl.algorithms.td3 import TD3, td3_target
from unirl.distributions import SquashedGaussian, TanhDeterministic
from unirl.errors import UnirlError
from unirl.models import ActorQ, ModelConfig
from unirl.ops import numpy_ops
from unirl.policy import Learner, Polyak
from unirl.replay import WEIGHTS

TINY = {"env": "Pendulum-v1", "num_envs_per_worker": 2, "train_batch_size": 8, "learning_starts": 16,
        "replay_batch_size": 16, "model": {"hidden_sizes": [16, 16], "activation": "relu"}}


# -- the squashed Gaussian -------------------------------------------------------------------------------
def squashed_logp_float64(mean, log_std, z):
    """log pi(tanh(u)) in float64, the naive form: N(u; mean, std) / prod(1 - tanh(u)^2)."""
    u = mean + np.exp(log_std) * z
    gauss = -0.5 * np.sum(z ** 2, -1) - np.sum(log_std, -1) - 0.5 * mean.shape[-1] * np.log(2 * np.pi)
    return np.tanh(u), gauss - np.sum(np.log1p(-np.tanh(u) ** 2), -1)


def test_squashed_gaussian_logp_matches_float64_reference():
    rng = np.random.default_rng(0)
    mean = rng.uniform(-3, 3, (64, 2))
    log_std = rng.uniform(-2, 1, (64, 2))
    z = rng.standard_normal((64, 2))
    dist = SquashedGaussian(np.full(2, -2.0), np.full(2, 2.0))
    inputs = np.concatenate([mean, log_std], -1).astype(np.float32)
    a, logp = dist.rsample(numpy_ops, inputs, z.astype(np.float32))
    a_ref, logp_ref = squashed_logp_float64(mean.astype(np.float32).astype(np.float64),
                                            log_std.astype(np.float32).astype(np.float64),
                                            z.astype(np.float32).astype(np.float64))
    np.testing.assert_allclose(a, a_ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(logp, logp_ref, rtol=1e-5, atol=1e-4)
    # far in the tails, where 1 - tanh(u)^2 rounds to 0 in float32: the stable form stays finite and close
    # to the float64 value of the naive form (2 (log 2 - |u|) asymptotically)
    big = np.array([[9.0, -12.0, 0.0, 0.0]], np.float32)
    _, logp_big = dist.rsample(numpy_ops, big, np.zeros((1, 2), np.float32))
    ref = squashed_logp_float64(np.array([[9.0, -12.0]]), np.zeros((1, 2)), np.zeros((1, 2)))[1]
    assert np.isfinite(logp_big).all()
    np.testing.assert_allclose(logp_big, ref, rtol=1e-5)


def test_squashed_gaussian_logp_gradient_matches_finite_differences():
    torch = pytest.importorskip("torch")
    from unirl.frameworks.torch import TorchOps

    rng = np.random.default_rng(1)
    mean, log_std, z = rng.uniform(-2, 2, (8, 3)), rng.uniform(-1, 0.5, (8, 3)), rng.standard_normal((8, 3))
    dist = SquashedGaussian(np.full(3, -1.0), np.full(3, 1.0))
    x = torch.tensor(np.concatenate([mean, log_std], -1), dtype=torch.float32, requires_grad=True)
    _, logp = dist.rsample(TorchOps(), x, torch.tensor(z, dtype=torch.float32))
    (grad,) = torch.autograd.grad(logp.sum(), x)
    x64 = np.concatenate([mean, log_std], -1).astype(np.float32).astype(np.float64)
    fd = np.zeros_like(x64)
    h = 1e-6
    for i in range(x64.shape[1]):
        up, down = x64.copy(), x64.copy()
        up[:, i] += h
        down[:, i] -= h
        lp = squashed_logp_float64(up[:, :3], up[:, 3:], z)[1]
        lm = squashed_logp_float64(down[:, :3], down[:, 3:], z)[1]
        fd[:, i] = (lp - lm) / (2 * h)
    np.testing.assert_allclose(grad.numpy(), fd, rtol=1e-3, atol=1e-3)


def test_squashed_actions_reach_the_env_rescaled_and_greedy_is_tanh_of_the_mean():
    dist = SquashedGaussian(np.array([-2.0]), np.array([4.0]))
    np.testing.assert_array_equal(dist.env_actions(np.array([[-1.0], [0.0], [1.0]], np.float32)), [[-2.0], [1.0], [4.0]])
    greedy = dist.greedy_numpy(np.array([[0.5, -1.0]], np.float32))
    np.testing.assert_allclose(greedy, [[-2.0 + (np.tanh(0.5) + 1) * 3.0]], rtol=1e-6)
    random = dist.sample_numpy(np.zeros((2, 2), np.float32), np.array([[0.0], [0.75]]), random=1.0)
    np.testing.assert_array_equal(random, [[-1.0], [0.5]])
    td3 = TanhDeterministic(np.array([-1.0]), np.array([1.0]))
    noisy = td3.sample_numpy(np.array([[0.95]], np.float32), np.array([[0.9999]]), noise_scale=0.5)
    assert noisy[0, 0] == 1.0  # clipped to the tanh range


def test_unbounded_box_is_refused_by_name():
    with pytest.raises(UnirlError, match="bounded Box"):
        SquashedGaussian(np.array([-np.inf]), np.array([np.inf]))


# -- the seam: several learners, Polyak --------------------------------------------------------------------
def sac_policy(framework="torch", **config):
    algo_cfg = SAC.config_class.from_dict(dict(TINY, framework=framework, **config))
    return SAC.build_policy(algo_cfg)


def replay_rows(policy, n=16, seed=0):
    rng = np.random.default_rng(seed)
    d = policy.dist.dim
    return {sb.OBS: rng.standard_normal((n, 3)).astype(np.float32),
            sb.ACTIONS: rng.uniform(-1, 1, (n, d)).astype(np.float32),
            sb.REWARDS: rng.standard_normal(n).astype(np.float32),
            NEXT_OBS: rng.standard_normal((n, 3)).astype(np.float32),
            sb.TERMINATEDS: (rng.random(n) < 0.2).astype(np.float32),
            DISCOUNTS: np.full(n, 0.99, np.float32), WEIGHTS: np.ones(n, np.float32),
            NOISE: rng.standard_normal((n, d)).astype(np.float32),
            NEXT_NOISE: rng.standard_normal((n, d)).astype(np.float32)}


def split(policy, flat):
    w = policy.layout.unflatten_numpy(flat)
    return {part: np.concatenate([v.ravel() for k, v in w.items() if k.startswith(part)])
            for part in ("pi/", "q1/", "q2/", "log_alpha")}


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_each_learner_changes_only_what_it_trains(framework):
    p = sac_policy(framework)
    before = split(p, p.get_flat_weights())
    hp = {"lr": 1e-2, "tau": 0.5, "target_entropy": -1.0}
    p.learn_on_batch(replay_rows(p), hp, learners=("critic",))
    after = split(p, p.get_flat_weights())
    assert not np.array_equal(after["q1/"], before["q1/"]) and not np.array_equal(after["q2/"], before["q2/"])
    for part in ("pi/", "log_alpha"):
        np.testing.assert_array_equal(after[part], before[part])
    p.learn_on_batch(replay_rows(p), hp, learners=("actor",))
    after2 = split(p, p.get_flat_weights())
    assert not np.array_equal(after2["pi/"], after["pi/"])
    for part in ("q1/", "q2/", "log_alpha"):
        np.testing.assert_array_equal(after2[part], after[part])
    # one optimizer state per learner, in the policy state (checkpoints)
    opt_keys = {k.split("/")[1] for k in p.get_state() if k.startswith("opt/")}
    assert opt_keys == {"critic", "actor", "alpha"}
    with pytest.raises(UnirlError, match="no learner `critc`"):
        p.learn_on_batch(replay_rows(p), hp, learners=("critc",))


def test_polyak_update_is_exact():
    p = sac_policy()
    rng = np.random.default_rng(3)
    p.set_flat_weights(rng.standard_normal(p.layout.size).astype(np.float32), "target_params")
    target = p.get_flat_weights("target_params")
    tau = np.float32(0.005)
    p.learn_on_batch(replay_rows(p), {"lr": 1e-3, "tau": float(tau), "target_entropy": -1.0},
                     learners=("critic",), then=(Polyak(tau="tau"),))
    online = p.get_flat_weights()
    expected = (np.float32(1.0) - tau) * target + tau * online
    np.testing.assert_array_equal(p.get_flat_weights("target_params"), expected)
    # tau = 1: the target becomes a copy of the online weights, bit for bit
    p.learn_on_batch(replay_rows(p, seed=1), {"lr": 1e-3, "tau": 1.0, "target_entropy": -1.0},
                     learners=("critic",), then=(Polyak(tau="tau"),))
    np.testing.assert_array_equal(p.get_flat_weights("target_params"), p.get_flat_weights())


def test_learner_naming_no_parameter_is_an_error():
    from unirl.algorithms.sac import critic_loss

    algo_cfg = SAC.config_class.from_dict(TINY)
    spec = SAC.policy_spec(algo_cfg)
    from unirl.optim import adam

    with pytest.raises(UnirlError, match="names no parameter"):
        spec.build(param_sets=("params", "target_params"), optimizer=adam(),
                   learners=(Learner("critic", critic_loss, trains=("critics/",)),))


def test_twin_q_target_matches_a_hand_loop():
    module = ActorQ(3, TanhDeterministic(np.full(2, -1.0), np.full(2, 1.0)),
                    ModelConfig(hidden_sizes=[8], activation="relu"))
    params = module.init_params(0)
    target = {k: v + 0.1 * np.random.default_rng(1).standard_normal(v.shape).astype(np.float32)
              for k, v in module.init_params(5).items()}
    rng = np.random.default_rng(2)
    batch = {NEXT_OBS: rng.standard_normal((5, 3)).astype(np.float32),
             sb.REWARDS: rng.standard_normal(5).astype(np.float32), DISCOUNTS: np.full(5, 0.9, np.float32),
             sb.TERMINATEDS: np.array([0, 1, 0, 0, 0], np.float32),
             NEXT_NOISE: rng.standard_normal((5, 2)).astype(np.float32)}
    hp = {"target_noise": np.float32(0.2), "target_noise_clip": np.float32(0.3), "twin_q": 1.0}
    y = td3_target(numpy_ops, module, target, batch, hp)

    def mlp(prefix, x):
        h = np.maximum(x @ target[f"{prefix}/0/w"] + target[f"{prefix}/0/b"], 0)
        return h @ target[f"{prefix}/out/w"] + target[f"{prefix}/out/b"]

    for i in range(5):
        s = batch[NEXT_OBS][i]
        a = np.tanh(mlp("pi", s)) + np.clip(0.2 * batch[NEXT_NOISE][i], -0.3, 0.3)
        a = np.clip(a, -1, 1)
        q = min(mlp("q1", np.concatenate([s, a]))[0], mlp("q2", np.concatenate([s, a]))[0])
        expected = batch[sb.REWARDS][i] + 0.9 * (1 - batch[sb.TERMINATEDS][i]) * q
        assert y[i] == pytest.approx(expected, rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("target_entropy,direction", [(10.0, 1), (-10.0, -1)])
def test_temperature_rises_below_the_target_entropy_and_falls_above(target_entropy, direction):
    p = sac_policy()
    before = p.get_weights()["log_alpha"][0]
    p.learn_on_batch(replay_rows(p), {"lr": 1e-2, "tau": 0.005, "target_entropy": target_entropy},
                     learners=("alpha",))
    after = p.get_weights()["log_alpha"][0]
    assert np.sign(after - before) == direction
    # and the loss's gradient has the opposite sign of the step (by hand: -(log pi + target))
    rows = replay_rows(p)
    inputs = p.forward(rows[sb.OBS])["dist_inputs"]
    _, logp = p.dist.rsample(numpy_ops, inputs, rows[NOISE])
    assert np.sign(np.mean(logp + target_entropy)) == direction


# -- algorithms --------------------------------------------------------------------------------------------
def digest_after(algo_name, iterations, **config):
    with unirl.build(algo_name, dict(TINY, **config)) as algo:
        for _ in range(iterations):
            algo.train()
        return algo.weights_digest()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("algo_name", ["SAC", "TD3"])
def test_worker_counts_and_backends_give_the_same_bits(algo_name):
    """The learner's normals (SAC's samples, TD3's target smoothing) and the acting noise do not depend on the split."""
    one = digest_after(algo_name, 6, num_workers=1, num_envs_per_worker=4)
    two = digest_after(algo_name, 6, num_workers=2, num_envs_per_worker=2)
    mp = digest_after(algo_name, 6, num_workers=4, num_envs_per_worker=1, backend="multiprocessing")
    assert one == two == mp


@pytest.mark.timeout(300)
@pytest.mark.parametrize("algo_name", ["SAC", "TD3"])
def test_resume_is_exact_with_the_replay_buffer_and_noise_state(algo_name, tmp_path):
    with unirl.build(algo_name, dict(TINY)) as algo:
        for _ in range(4):
            algo.train()
        path = algo.save(str(tmp_path / "ckpt"))
        for _ in range(4):
            algo.train()
        expected = algo.weights_digest()
        target = algo.policy.get_flat_weights("target_params")
    resumed = unirl.restore(path, resume=True)
    try:
        assert len(resumed.buffer) > 0
        for _ in range(4):
            resumed.train()
        assert resumed.weights_digest() == expected
        np.testing.assert_array_equal(resumed.policy.get_flat_weights("target_params"), target)
    finally:
        resumed.stop()


def test_ddpg_is_a_td3_config_with_one_critic():
    with unirl.build("TD3", dict(TINY, twin_q=False, policy_delay=1, target_noise=0.0)) as algo:
        q2 = split(algo.policy, algo.policy.get_flat_weights())["q2/"]
        for _ in range(5):
            algo.train()
        after = split(algo.policy, algo.policy.get_flat_weights())
        np.testing.assert_array_equal(after["q2/"], q2)  # the second critic is never trained
        assert algo.execution.grad_steps > 0
    assert digest_after("TD3", 5, twin_q=False, policy_delay=1, target_noise=0.0) != digest_after("TD3", 5)


def test_random_actions_until_learning_starts_then_the_policy():
    with unirl.build("SAC", dict(TINY, learning_starts=16)) as algo:
        assert algo.exploration() == {"random": 1.0}
        algo.train()
        algo.train()
        assert algo.exploration() == {"random": 0.0}
    with pytest.raises(UnirlError, match="must lie in"):
        unirl.build("SAC", dict(TINY, tau=0.0))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("algo_name,budget", [("SAC", 6000), ("TD3", 6000)])
def test_short_learning_run_on_pendulum(algo_name, budget):
    """A small network on JAX (the fastest here): the last 10 training episodes average above -400 (random: ~-1200)."""
    cfg = {"env": "Pendulum-v1", "framework": "jax", "lr": 1e-3, "seed": 0,
           "model": {"hidden_sizes": [64, 64], "activation": "relu"}}
    returns = []
    with unirl.build(algo_name, cfg) as algo:
        while algo.timesteps_total < budget:
            returns.extend(algo.train()["episode_returns_this_iter"])
        assert np.mean(returns[-10:]) > -400, returns[-10:]


@pytest.mark.timeout(600)
def test_quick_conformance_slice():
    """Levels 3 (worker counts 1-4, bit for bit; Ape-X TD3 replays its recorded schedule) and 4 (torch against
    jax: loss, each learner's gradient and the state after a step, learning curves) for the three algorithms."""
    from unirl.conformance.report import FAILED, PASSED
    from unirl.conformance.runner import SuiteOptions, run_suite

    algos = ("SAC", "TD3", "APEX_TD3")
    report = run_suite(SuiteOptions(algos=list(algos), frameworks=["torch", "jax"], backends=["local"], quick=True,
                                    levels=(3, 4)))
    failed = [f"{r.algo} L{r.level} {r.check} {r.framework}: {r.message}" for r in report.results if r.status == FAILED]
    assert not failed, failed
    for algo in algos:
        assert report.cell(algo, "jax", "local", 3) == "pass"
        assert report.cell(algo, "jax", "local", 4) == "pass"
    assert sum(r.status == PASSED for r in report.results if r.algo == "SAC" and r.level == 3) >= 3


def steps_to_last10(algo_name, config, target, budget):
    """Env steps at which the mean of the last 10 training episodes first reaches `target` (None: not within budget)."""
    returns = []
    with unirl.build(algo_name, config) as algo:
        while algo.timesteps_total < budget:
            returns.extend(algo.train()["episode_returns_this_iter"])
            if len(returns) >= 10 and np.mean(returns[-10:]) >= target:
                return algo.timesteps_total
    return None


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("algo_name,budget", [("SAC", 10_000), ("TD3", 20_000)])
def test_defaults_reach_minus_200_on_pendulum_for_4_of_5_seeds(algo_name, budget):
    """The issue's bar (docs/offpolicy.md has the measured steps): torch, defaults, seeds 0-4."""
    reached = [steps_to_last10(algo_name, {"env": "Pendulum-v1", "seed": s}, -200.0, budget) for s in range(5)]
    assert sum(r is not None for r in reached) >= 4, reached


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_discrete_sac_solves_cartpole():
    cfg = {"env": "CartPole-v1", "framework": "jax", "seed": 0, "model": {"hidden_sizes": [64, 64], "activation": "relu"}}
    with unirl.build("SAC", cfg) as algo:
        best = 0.0
        while algo.timesteps_total < 100_000 and best < 475:
            for _ in range(5000 // 12):
                algo.train()
            best = max(best, algo.evaluate(20)["evaluation/episode_return_mean"])
    assert best >= 475


@pytest.mark.timeout(300)
def test_jax_fuses_the_steps_of_an_iteration_and_keeps_the_bits_across_worker_counts():
    """On JAX, SAC's replayed steps of an iteration run as one compiled scan (Policy.learn_on_batches); the
    weights stay bit-identical across worker counts, and close to the one-call-per-step path's."""
    cfg = dict(TINY, framework="jax", learning_starts=8)
    with unirl.build("SAC", dict(cfg, num_workers=1, num_envs_per_worker=4)) as a:
        for _ in range(5):
            a.train()
        assert any(key[2] for key in a.policy._multi_steps), "no stacked (scanned) step was compiled"
        fused = a.policy.get_flat_weights()
        one = a.weights_digest()
    assert digest_after("SAC", 5, **dict(cfg, num_workers=2, num_envs_per_worker=2)) == one
    with unirl.build("SAC", dict(cfg, num_workers=1, num_envs_per_worker=4)) as b:
        b.learn_minibatches = lambda minibatches, hp, step: SAC.__mro__[1].learn_minibatches(b, minibatches, hp, step)
        for _ in range(5):
            b.train()
        np.testing.assert_allclose(b.policy.get_flat_weights(), fused, rtol=1e-4, atol=1e-5)


def test_a_fixed_temperature_has_no_temperature_learner():
    with unirl.build("SAC", dict(TINY, autotune_alpha=False, initial_alpha=0.2)) as algo:
        for _ in range(4):
            result = algo.train()
        assert [l.name for l in algo.policy.learners] == ["critic", "actor"]
        assert algo.policy.get_weights()["log_alpha"][0] == np.float32(np.log(0.2))
        assert "learner/alpha_loss" not in result and "learner/critic_loss" in result
