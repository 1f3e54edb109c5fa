"""Recurrent policies: env steps to a greedy score on CartPole with the velocities hidden (LSTM PPO against the
feed-forward PPO), and the learner's cost of the recurrence (samples/s against the feed-forward learner).

    python benchmarks/recurrent.py stateless-cartpole --framework torch --budget 500000 --eval-every 25000
    python benchmarks/recurrent.py stateless-cartpole --feedforward --budget 500000 --eval-every 100000
    python benchmarks/recurrent.py cost --framework torch jax tf
    python benchmarks/recurrent.py memory --framework jax --budget 2000000 --eval-every 100000   # unirl[minigrid]

Each prints one JSON line per measurement (and `--out FILE` appends them), with the command's settings.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from unirl.benchmarks.model_based import emit, learning

ENV = "unirl/StatelessCartPole-v1"
#: Recurrent PPO on CartPole without velocities: PPO's defaults, an LSTM of 64 units after one 64-unit layer.
LSTM = {"env": ENV, "model": {"lstm_cell_size": 64, "hidden_sizes": [64], "max_seq_len": 16}}
#: The feed-forward PPO beside it: PPO's defaults.
FEEDFORWARD = {"env": ENV}


def minigrid_image(env_id: str = "MiniGrid-MemoryS7-v0", **kwargs):
    """A MiniGrid env through MiniGrid's own image wrapper (the agent's 7x7x3 view, uint8): an env for unirl as
    `unirl.benchmarks.recurrent:minigrid_image`, with `env_config` {"env_id": ...}."""
    import gymnasium as gym
    from minigrid.wrappers import ImgObsWrapper

    return ImgObsWrapper(gym.make(env_id, **kwargs))


#: Recurrent PPO on MiniGrid-MemoryS7-v0 (see an object, walk down a corridor, pick the matching one): the small CNN
#: on the 7x7 view (object ids scaled by 0.1), an LSTM of 64, sequences of 32 steps; settings for long episodes.
MEMORY = {"env": "unirl.benchmarks.recurrent:minigrid_image", "env_config": {"env_id": "MiniGrid-MemoryS7-v0"},
          "num_envs_per_worker": 16, "train_batch_size": 2048, "minibatch_size": 512, "num_epochs": 4,
          "gamma": 0.99, "gae_lambda": 0.95, "lr": 5e-4, "lr_decay_timesteps": 0, "entropy_coeff": 0.01,
          "model": {"lstm_cell_size": 64, "hidden_sizes": [64], "max_seq_len": 32, "obs_scale": 0.1}}


def cost(frameworks, iterations: int, out) -> None:
    """Learner samples per second (PPO's epochs over one train batch) of the LSTM model against the feed-forward
    model of the same widths, on 8 envs x 32 steps of StatelessCartPole, after a warm-up iteration."""
    import unirl

    for framework in frameworks:
        rates = {}
        for label, model in (("feedforward", {"hidden_sizes": [64]}), ("lstm", LSTM["model"])):
            with unirl.build("PPO", {"env": ENV, "framework": framework, "model": model}) as algo:
                algo.train()
                learn = 0.0
                original = algo.learn

                def timed(rows, hp, original=original):
                    nonlocal learn
                    t = time.perf_counter()
                    stats = original(rows, hp)
                    learn += time.perf_counter() - t
                    return stats

                algo.learn = timed
                for _ in range(iterations):
                    algo.train()
                c = algo.config
                rates[label] = iterations * c.train_batch_size * c.num_epochs / learn
        emit({"benchmark": "recurrent-cost", "framework": framework, "iterations": iterations,
              "learner_samples_per_s": {k: round(v) for k, v in rates.items()},
              "lstm_over_feedforward": round(rates["lstm"] / rates["feedforward"], 3)}, out)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["stateless-cartpole", "memory", "cost"])
    p.add_argument("--framework", nargs="+", default=["torch"])
    p.add_argument("--feedforward", action="store_true", help="the feed-forward PPO instead of the LSTM")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--budget", type=int, default=500_000)
    p.add_argument("--eval-every", type=int, default=25_000)
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--stop-at", type=float, default=475.0)
    p.add_argument("--out", default=None)
    p.add_argument("--png", default=None)
    p.add_argument("--config", default="{}", help="JSON overrides of the benchmark's config")
    a = p.parse_args(argv)
    more = json.loads(a.config)
    if a.what == "cost":
        cost(a.framework, a.iterations, a.out)
        return
    for framework in a.framework:
        if a.what == "memory":
            config = dict(MEMORY, framework=framework, **more)
            if a.feedforward:
                config["model"] = {k: v for k, v in MEMORY["model"].items() if k not in ("lstm_cell_size", "max_seq_len")}
            name, stop_at = "memory-s7" + ("-feedforward" if a.feedforward else ""), None
        else:
            config = dict(FEEDFORWARD if a.feedforward else LSTM, framework=framework, **more)
            name, stop_at = "stateless-cartpole" + ("-feedforward" if a.feedforward else ""), a.stop_at
        learning(name, config, a.seeds, a.budget, a.eval_every, a.episodes, a.out, "PPO", a.png, stop_at)


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
