"""Train on one framework, restore the checkpoint into another, and check they act the same.

    python examples/checkpoint_other_framework.py                      # torch -> jax
    python examples/checkpoint_other_framework.py --to tf --steps 50000

Checkpoints are framework-free: `weights.npz` names parameters without any framework's naming, so
a torch run restores into JAX or TensorFlow (and `unirl evaluate CKPT --framework jax` does the
same from the command line). The frameworks agree to ~1e-7, so greedy actions agree.
"""
from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np

import unirl


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--from", dest="source", default="torch")
    p.add_argument("--to", default="jax")
    p.add_argument("--steps", type=int, default=30_000)
    args = p.parse_args(argv)
    folder = tempfile.mkdtemp(prefix="unirl-ckpt-")
    with unirl.build("PPO", {"env": "CartPole-v1", "framework": args.source}) as algo:
        while algo.train()["timesteps_total"] < args.steps:
            pass
        path = algo.save(os.path.join(folder, "ckpt"))
        obs = np.random.default_rng(0).normal(0.0, 0.5, (256, 4)).astype(np.float32)
        before = algo.compute_actions(obs)
        score_before = algo.evaluate(5)["evaluation/episode_return_mean"]
    with unirl.restore(path, framework=args.to) as restored:
        after = restored.compute_actions(obs)
        score_after = restored.evaluate(5)["evaluation/episode_return_mean"]
    agree = float(np.mean(np.asarray(before) == np.asarray(after)))
    print(f"{args.source} -> {args.to}: greedy actions agree on {agree:.1%} of 256 observations; "
          f"greedy return {score_before:.1f} on {args.source}, {score_after:.1f} on {args.to}")
    return {"agree": agree, "before": score_before, "after": score_after}


if __name__ == "__main__":
    main()
