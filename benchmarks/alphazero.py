"""AlphaZero: search speed, and wall time to targets on tic-tac-toe and Connect Four.

    python benchmarks/alphazero.py search-speed --framework torch jax tf numpy --batch 1 8 32
    python benchmarks/alphazero.py tic-tac-toe --framework torch --minutes 10 --eval-every 10
    python benchmarks/alphazero.py connect-four --framework torch --minutes 15 --eval-every 10 --png docs/c4.png

search-speed: simulations per second (one process, one thread) of the PUCT search from the opening position of
Connect Four, `--batch` games searching together (one network call per simulation for all of them), with the
default network (2 x 128 MLP) through each framework's adapter, and on the NumPy ops (`numpy`: no framework).
The learning commands train with the defaults (and `--config` changes) and evaluate against exact minimax
(tic-tac-toe, 100 games) or against random and OpenSpiel's MCTS with 400 random rollouts per move (Connect Four),
half the games in each seat, timing training apart from evaluation. Each prints one JSON line per measurement
(and `--out FILE` appends them), with the command's settings.
"""
from __future__ import annotations

import argparse
import json
import os
import time

# One thread per process, as unirl's worker processes run (backends.base.worker_env): NumPy's OpenBLAS would
# otherwise start a thread per core for the NumPy network's products and lose to the other jobs on a busy machine.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from unirl.benchmarks.model_based import emit


def search_speed(frameworks, batches, simulations: int, repeats: int, out) -> None:
    import unirl
    from unirl.execution.self_play import network_evaluator
    from unirl.mcts import SearchConfig, search

    for framework in frameworks:
        algo = unirl.build("AlphaZero", {"env": "connect_four",
                                         "framework": "torch" if framework == "numpy" else framework})
        try:
            evaluate = (network_evaluator(module=algo.policy.module, flat=algo.policy.get_flat_weights())
                        if framework == "numpy" else network_evaluator(algo.policy))
            settings = SearchConfig(num_simulations=simulations)
            for batch in batches:
                states = [algo.game.new_initial_state() for _ in range(batch)]
                search(states, evaluate, algo.game.num_distinct_actions(), SearchConfig(num_simulations=2))  # warm-up
                best = float("inf")
                for _ in range(repeats):
                    t = time.perf_counter()
                    search(states, evaluate, algo.game.num_distinct_actions(), settings)
                    best = min(best, time.perf_counter() - t)
                emit({"benchmark": "alphazero-search-speed", "game": "connect_four", "framework": framework,
                      "batch": batch, "simulations": simulations, "seconds": round(best, 4),
                      "simulations_per_s": round(batch * simulations / best, 1)}, out)
        finally:
            algo.stop()


def train_to_target(game: str, framework: str, config: dict, minutes: float, eval_every: int, opponents: dict,
                    out, stop_when=None, png: str | None = None, save: str | None = None) -> None:
    """Train until `minutes` of training time; every `eval_every` iterations, a match against each opponent; the
    final algorithm saved to `save` (a checkpoint folder) if given."""
    import unirl

    cfg = dict({"env": game, "framework": framework}, **config)
    curve = []
    with unirl.build("AlphaZero", cfg) as algo:
        train_s, iteration = 0.0, 0
        while train_s < 60 * minutes:
            t = time.perf_counter()
            result = algo.train()
            train_s += time.perf_counter() - t
            iteration += 1
            if iteration % eval_every:
                continue
            record = {"benchmark": f"alphazero-{game}", "framework": framework, "config": config,
                      "iteration": iteration, "games": result["episodes_total"],
                      "grad_steps": result["learner/grad_steps"], "train_s": round(train_s, 1)}
            for name, games in opponents.items():
                t = time.perf_counter()
                ev = algo.evaluate(games, opponent=name)
                record[name] = {"wins": ev["evaluation/wins"], "draws": ev["evaluation/draws"],
                                "losses": ev["evaluation/losses"], "games": games,
                                "eval_s": round(time.perf_counter() - t, 1)}
            emit(record, out)
            curve.append(record)
            if stop_when is not None and stop_when(record):
                break
        if save:
            algo.save(save)
    if png and curve:
        plot_curve(curve, list(opponents), png, game)


def plot_curve(curve: list, opponents: list, png: str, game: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for name in opponents:
        score = [(r[name]["wins"] + 0.5 * r[name]["draws"]) / r[name]["games"] for r in curve]
        axes[0].plot([r["train_s"] / 60 for r in curve], score, marker="o", label=f"vs {name}")
        axes[1].plot([r["games"] for r in curve], score, marker="o", label=f"vs {name}")
    axes[0].set_xlabel("training wall time (minutes)")
    axes[1].set_xlabel("self-play games")
    for ax in axes:
        ax.set_ylabel("score (wins + draws / 2)")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"AlphaZero on {game} (seed 0, 2-core CPU), {json.dumps(curve[0]['config']) or 'defaults'}", fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=100)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["search-speed", "tic-tac-toe", "connect-four"])
    p.add_argument("--framework", nargs="+", default=["torch"])
    p.add_argument("--batch", nargs="+", type=int, default=[1, 8, 32])
    p.add_argument("--simulations", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--mcts-games", type=int, default=0, help="Connect Four: games against MCTS-400 per evaluation")
    p.add_argument("--config", default="{}", help="AlphaZero config changes (JSON)")
    p.add_argument("--png")
    p.add_argument("--save", help="save the trained algorithm to this checkpoint folder (one framework)")
    p.add_argument("--out")
    args = p.parse_args(argv)
    config = json.loads(args.config)
    if args.command == "search-speed":
        search_speed(args.framework, args.batch, args.simulations, args.repeats, args.out)
    elif args.command == "tic-tac-toe":
        for fw in args.framework:
            train_to_target("tic_tac_toe", fw, config, args.minutes, args.eval_every, {"minimax": 100}, args.out,
                            png=args.png, save=args.save)
    else:
        opponents = {"random": 100}
        if args.mcts_games:
            opponents["mcts"] = args.mcts_games
        for fw in args.framework:
            train_to_target("connect_four", fw, config, args.minutes, args.eval_every, opponents, args.out,
                            png=args.png, save=args.save)


if __name__ == "__main__":
    main()
