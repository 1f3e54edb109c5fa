"""conv2d in the neutral op set and the CNN torso.

NumPy's conv2d against a direct loop; torch, tf and jax against NumPy (values, and gradients
against NumPy finite differences and each other within the level-4 tolerance); a CNN module's
outputs bitwise the same for a row whatever the batch it arrives in and wherever in it, on every
framework; the torso chosen from the observation space and overridable in `model`.
"""
import gymnasium as gym
import numpy as np
import pytest

from unirl.models import MINATAR_CNN, NATURE_CNN, ModelConfig, build_module
from unirl.ops import conv_output_size, numpy_ops

FRAMEWORKS = ("torch", "tf", "jax")
CASES = [((2, 9, 9, 3), (3, 3, 3, 4), 1, "VALID"), ((2, 9, 9, 3), (3, 3, 3, 4), 2, "SAME"),
         ((1, 12, 10, 2), (4, 4, 2, 5), 2, "VALID"), ((3, 10, 10, 4), (8, 8, 4, 2), 4, "SAME"),
         ((2, 5, 5, 3), (1, 1, 3, 2), 1, "VALID")]


def direct_conv(x, w, stride, padding):
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    kh, kw, c, o = w.shape
    oh, t, b = conv_output_size(x.shape[1], kh, stride, padding)
    ow, l, r = conv_output_size(x.shape[2], kw, stride, padding)
    x = np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)))
    out = np.zeros((x.shape[0], oh, ow, o))
    for i in range(oh):
        for j in range(ow):
            patch = x[:, i * stride:i * stride + kh, j * stride:j * stride + kw, :]
            out[:, i, j] = np.tensordot(patch, w, axes=([1, 2, 3], [0, 1, 2]))
    return out


def case_arrays(xs, ws, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(xs).astype(np.float32), rng.standard_normal(ws).astype(np.float32)


@pytest.mark.parametrize("xs,ws,stride,padding", CASES)
def test_numpy_conv2d_matches_direct_loop(xs, ws, stride, padding):
    x, w = case_arrays(xs, ws)
    got = numpy_ops.conv2d(x, w, stride, padding)
    np.testing.assert_allclose(got, direct_conv(x, w, stride, padding), rtol=1e-5, atol=1e-5)
    if padding == "SAME":
        assert got.shape[1:3] == (-(-xs[1] // stride), -(-xs[2] // stride))


@pytest.fixture(scope="module", params=FRAMEWORKS)
def adapter(request):
    from unirl.frameworks import get_adapter

    return get_adapter(request.param)


def test_conv2d_matches_numpy(adapter):
    for xs, ws, stride, padding in CASES:
        x, w = case_arrays(xs, ws)
        f = adapter.compile(lambda x, w: adapter.ops.conv2d(x, w, stride, padding))
        got = adapter.numpy(f(adapter.tensor(x), adapter.tensor(w)))
        np.testing.assert_allclose(got, numpy_ops.conv2d(x, w, stride, padding), rtol=2e-6, atol=1e-5)


def loss_numpy(x, w, r, stride, padding):
    return float((numpy_ops.conv2d(x, w, stride, padding).astype(np.float64) * r).sum())


def framework_grads(adapter, x, w, r, stride, padding):
    ops = adapter.ops

    def f(flat, x, r):
        wt = ops.reshape(flat[:w.size], w.shape)
        xt = ops.reshape(flat[w.size:], x.shape)
        return ops.sum(ops.conv2d(xt, wt, stride, padding) * r), {}

    flat = np.concatenate([w.ravel(), x.ravel()])
    (_, _), g = adapter.compile(adapter.value_and_grad(f))(adapter.tensor(flat), adapter.tensor(x),
                                                            adapter.tensor(r))
    return np.asarray(adapter.numpy(g), np.float64)


@pytest.mark.parametrize("case", [0, 1, 3])
def test_conv2d_gradients_against_finite_differences(adapter, case):
    xs, ws, stride, padding = CASES[case]
    x, w = case_arrays(xs, ws, seed=case)
    out_shape = numpy_ops.conv2d(x, w, stride, padding).shape
    r = np.random.default_rng(9).standard_normal(out_shape).astype(np.float32)
    g = framework_grads(adapter, x, w, r, stride, padding)
    # The loss is linear in w and in x: central differences in float64 are exact up to rounding.
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    rng = np.random.default_rng(1)
    for idx in rng.choice(w.size, 6, replace=False):
        e = np.zeros(w.size)
        e[idx] = 1e-3
        fd = (float((direct_conv(x64, w64 + e.reshape(w.shape), stride, padding) * r).sum())
              - float((direct_conv(x64, w64 - e.reshape(w.shape), stride, padding) * r).sum())) / 2e-3
        np.testing.assert_allclose(g[idx], fd, rtol=1e-4, atol=1e-4)
    for idx in rng.choice(x.size, 6, replace=False):
        e = np.zeros(x.size)
        e[idx] = 1e-3
        fd = (float((direct_conv(x64 + e.reshape(x.shape), w64, stride, padding) * r).sum())
              - float((direct_conv(x64 - e.reshape(x.shape), w64, stride, padding) * r).sum())) / 2e-3
        np.testing.assert_allclose(g[w.size + idx], fd, rtol=1e-4, atol=1e-4)


@pytest.mark.timeout(600)
def test_conv2d_gradients_agree_across_frameworks():
    from unirl.frameworks import get_adapter

    xs, ws, stride, padding = CASES[1]
    x, w = case_arrays(xs, ws, seed=4)
    r = np.random.default_rng(9).standard_normal(numpy_ops.conv2d(x, w, stride, padding).shape).astype(np.float32)
    grads = {fw: framework_grads(get_adapter(fw), x, w, r, stride, padding) for fw in FRAMEWORKS}
    for fw in FRAMEWORKS[1:]:
        np.testing.assert_allclose(grads[fw], grads["torch"], rtol=1e-5, atol=1e-5)


def cnn_policy(adapter, obs_shape=(10, 10, 4), dtype=np.uint8, **model):
    from unirl.policy import Policy

    high = 255 if dtype == np.uint8 else 1.0
    space = gym.spaces.Box(0, high, obs_shape, dtype)
    module = build_module("actor_critic", space, gym.spaces.Discrete(3), ModelConfig(**model))
    return Policy(adapter, module, module.init_params(0))


@pytest.mark.timeout(600)
def test_cnn_rows_do_not_depend_on_their_batch(adapter):
    """Bitwise: every row of batches of 1..70 and 129, and rows placed after 1..65 others, equals the row alone."""
    policy = cnn_policy(adapter, hidden_sizes=[32], activation="relu")
    rng = np.random.default_rng(0)
    obs = rng.integers(0, 256, (140, 10, 10, 4)).astype(np.uint8)
    alone = np.concatenate([policy.policy_outputs(obs[i:i + 1]) for i in range(130)])
    alone_v = np.concatenate([policy.forward(obs[i:i + 1])["values"] for i in range(130)])
    for n in list(range(1, 71)) + [129, 130]:
        assert np.array_equal(policy.policy_outputs(obs[:n]), alone[:n]), f"policy_outputs[:{n}]"
    for n in (1, 63, 64, 65, 130):
        assert np.array_equal(policy.forward(obs[:n])["values"], alone_v[:n]), f"forward[:{n}]"
    for s in (1, 2, 7, 31, 63, 64, 65):
        batch = np.concatenate([obs[130:130 + s] if s <= 10 else rng.integers(0, 256, (s, 10, 10, 4)).astype(np.uint8),
                                obs[:5]])
        assert np.array_equal(policy.policy_outputs(batch)[s:], alone[:5]), f"shift {s}"


def test_torso_chosen_from_the_observation_space():
    act = gym.spaces.Discrete(4)
    atari = build_module("actor_critic", gym.spaces.Box(0, 255, (84, 84, 4), np.uint8), act, ModelConfig())
    assert atari.config.conv_filters == NATURE_CNN and atari.config.obs_scale == pytest.approx(1 / 255)
    assert atari.layout.shapes["pi/conv0/w"] == (8, 8, 4, 32) and atari.torso_width == 7 * 7 * 64
    minatar = build_module("actor_critic", gym.spaces.Box(0, 1, (10, 10, 4), bool), act, ModelConfig())
    assert minatar.config.conv_filters == MINATAR_CNN and minatar.config.obs_scale == 1.0
    assert minatar.layout.shapes["pi/conv0/w"] == (3, 3, 4, 16) and minatar.torso_width == 8 * 8 * 16
    custom = build_module("q", gym.spaces.Box(0, 1, (10, 10, 4)), act,
                          ModelConfig(conv_filters=[[8, 3, 2]], conv_padding="SAME"))
    assert custom.layout.shapes["q/conv0/w"] == (3, 3, 4, 8) and custom.torso_width == 5 * 5 * 8
    flat = build_module("actor_critic", gym.spaces.Box(0, 1, (10, 10, 4)), act, ModelConfig(conv_filters=[]))
    assert "pi/conv0/w" not in flat.layout.shapes and flat.torso_width == 400
    out = flat.forward_train(numpy_ops, flat.init_params(0), np.zeros((2, 10, 10, 4), np.float32))
    assert out["dist_inputs"].shape == (2, 4)
