"""Population-based training of PPO's learning rate with Ray Tune (needs unirl[tune]).

    python examples/tune_pbt.py                                   # 4 trials, 30k env steps each
    python examples/tune_pbt.py --num-samples 2 --steps 2048      # a quick look

Every unirl algorithm is a Tune trainable (`unirl.tune.trainable("PPO")`): one Tune iteration is
one `train()`, and Tune's checkpoints are unirl checkpoints, so PBT's exploit step (a poor trial
takes a good trial's checkpoint and config) continues that trial exactly. The same from the
command line:

    unirl tune --scheduler pbt --num-samples 4 --config '{"lr_decay_timesteps": 0}' \
               --space '{"lr": {"loguniform": [1e-4, 3e-2]}}' --stop '{"timesteps_total": 30000}' \
               --perturbation-interval 8 --cpus-per-trial 0.5
"""
from __future__ import annotations

import argparse
import tempfile

import unirl.tune


def main(argv=None) -> list:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-samples", type=int, default=4)
    p.add_argument("--steps", type=int, default=30_000)
    p.add_argument("--perturbation-interval", type=int, default=8)
    p.add_argument("--output", default=None)
    args = p.parse_args(argv)
    from ray import tune

    rows, grid, folder = unirl.tune.run_tune(
        "PPO", {"env": "CartPole-v1", "lr_decay_timesteps": 0, "lr": tune.loguniform(1e-4, 3e-2)},
        scheduler="pbt", num_samples=args.num_samples, perturbation_interval=args.perturbation_interval,
        stop={"timesteps_total": args.steps}, cpus_per_trial=0.5,
        output=args.output or tempfile.mkdtemp(prefix="unirl-pbt-"))
    print(unirl.tune.format_table(rows, "episode_return_mean"))
    print(f"experiment folder: {folder} (unirl plot {folder}; tensorboard --logdir {folder})")
    return rows


if __name__ == "__main__":
    main()
