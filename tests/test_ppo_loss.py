"""The PPO loss on a small batch, against an independent float64 computation written out by hand."""
import math

import numpy as np
import pytest

from algorithms.ppo import ppo_loss
from unirl import sample_batch as sb
from unirl.distributions import Categorical
from unirl.models import ActorCritic, ModelConfig
from unirl.ops import numpy_ops

torch_adapter = pytest.importorskip("unirl.frameworks.torch").Adapter()


def hand_ppo_loss(params, batch, clip, vf_coeff, ent_coeff):
    """Plain-Python PPO loss (float64) with per-row loops: no shared code with the library."""
    def mlp(x, tower):
        h = list(x)
        for i in range(2):
            w, b = params[f"{tower}/{i}/w"], params[f"{tower}/{i}/b"]
            h = [math.tanh(sum(h[k] * float(w[k, j]) for k in range(len(h))) + float(b[j])) for j in range(w.shape[1])]
        return h

    rows = len(batch[sb.ACTIONS])
    advs = [float(a) for a in batch[sb.ADVANTAGES]]
    mean = sum(advs) / rows
    std = math.sqrt(sum((a - mean) ** 2 for a in advs) / rows)
    surr, vf, ent = 0.0, 0.0, 0.0
    for i in range(rows):
        hp = mlp(batch[sb.OBS][i], "pi")
        w, b = params["pi/out/w"], params["pi/out/b"]
        logits = [sum(hp[k] * float(w[k, j]) for k in range(len(hp))) + float(b[j]) for j in range(w.shape[1])]
        m = max(logits)
        lse = m + math.log(sum(math.exp(l - m) for l in logits))
        logp_all = [l - lse for l in logits]
        logp = logp_all[int(batch[sb.ACTIONS][i])]
        ratio = math.exp(logp - float(batch[sb.LOGP][i]))
        adv = (advs[i] - mean) / (std + 1e-8)
        surr += min(ratio * adv, min(max(ratio, 1 - clip), 1 + clip) * adv)
        hv = mlp(batch[sb.OBS][i], "vf")
        value = sum(hv[k] * float(params["vf/out/w"][k, 0]) for k in range(len(hv))) + float(params["vf/out/b"][0])
        vf += (value - float(batch[sb.VALUE_TARGETS][i])) ** 2
        ent += -sum(math.exp(l) * l for l in logp_all)
    return -surr / rows + vf_coeff * vf / rows - ent_coeff * ent / rows


@pytest.mark.parametrize("ops_name", ["numpy", "torch"])
def test_ppo_loss_matches_hand_computation(ops_name):
    rng = np.random.default_rng(3)
    model = ActorCritic(3, Categorical(2), ModelConfig(hidden_sizes=(4, 4)))
    params = model.init_params(7)
    params["pi/out/w"] = rng.standard_normal((4, 2)).astype(np.float32)  # a policy far from uniform
    batch = {
        sb.OBS: rng.standard_normal((6, 3)).astype(np.float32),
        sb.ACTIONS: np.array([0, 1, 1, 0, 1, 0], np.int64),
        # old log-probs chosen so that some ratios fall outside [0.8, 1.2] and get clipped
        sb.LOGP: np.log(np.array([0.2, 0.9, 0.5, 0.6, 0.1, 0.7], np.float32)),
        sb.ADVANTAGES: np.array([1.0, -2.0, 0.5, 3.0, -1.0, 0.25], np.float32),
        sb.VALUE_TARGETS: np.array([1.0, 0.0, -1.0, 2.0, 0.5, 0.3], np.float32),
    }
    hp = {"clip_param": 0.2, "vf_loss_coeff": 0.5, "entropy_coeff": 0.01, "normalize_advantages": 1.0}
    expected = hand_ppo_loss(params, batch, 0.2, 0.5, 0.01)
    if ops_name == "numpy":
        ops, conv = numpy_ops, lambda x: np.asarray(x)
    else:
        ops, conv = torch_adapter.ops, torch_adapter.tensor
    loss, stats = ppo_loss(ops, model, {k: conv(v) for k, v in params.items()},
                           {k: conv(v) for k, v in batch.items()},
                           {k: conv(np.float32(v)) for k, v in hp.items()})
    loss = float(np.asarray(loss) if ops_name == "numpy" else loss.item())
    assert loss == pytest.approx(expected, rel=1e-5, abs=1e-6)
    clip_fraction = float(stats["clip_fraction"])
    assert 0.0 < clip_fraction < 1.0, "the batch was built so that some, not all, ratios are clipped"
