"""The seed's algorithm table, reproduced at small scale on MinAtar.

IMPALA, A2C and A3C (PPO where one is missing) each train for the same wall-clock budget on four
MinAtar games; the table of final scores (mean return of the last 100 training episodes, and a
greedy evaluation) is printed beside the seed's Atari numbers. MinAtar has no BeamRider or QBert:
its Asterix and Seaquest stand in for them, so the comparison is one of ranking, not of values.

    python -m benchmarks.seed_table                      # 60 s per run (a quick look: 12 runs)
    python -m benchmarks.seed_table --budget 600         # the long table: 10 minutes per run
    python -m benchmarks.seed_table --games Breakout --algos A2C --budget 30 --json out.json
    python -m benchmarks.seed_table --merge a.json b.json --plot docs/seed_table.png   # join parallel halves
"""
from __future__ import annotations

import argparse
import json
import time

#: The seed's headline table (Atari, from the talk): BeamRider, Breakout, QBert, SpaceInvaders.
SEED_TABLE = {
    "IMPALA": {"BeamRider": 3181, "Breakout": 538, "QBert": 10850, "SpaceInvaders": 843},
    "A2C": {"BeamRider": 874, "Breakout": 268, "QBert": 1212, "SpaceInvaders": 518},
    "A3C": {"BeamRider": 1000, "Breakout": 10, "QBert": 500, "SpaceInvaders": 300},
}
#: MinAtar game standing in for each seed game.
GAMES = {"BeamRider": "Asterix", "Breakout": "Breakout", "QBert": "Seaquest", "SpaceInvaders": "SpaceInvaders"}

MODEL = {"hidden_sizes": [128], "activation": "relu", "vf_share_layers": True}
CONFIGS = {
    "A2C": {"num_workers": 1, "num_envs_per_worker": 16, "train_batch_size": 80, "lr": 7e-4, "gamma": 0.99,
            "entropy_coeff": 0.01, "grad_clip": 0.5},
    "A3C": {"num_workers": 2, "num_envs_per_worker": 8, "lr": 7e-4, "gamma": 0.99, "entropy_coeff": 0.01,
            "grad_clip": 0.5},
    "IMPALA": {"num_workers": 2, "num_envs_per_worker": 8, "rollout_fragment_length": 20, "train_batch_size": 160,
               "lr": 7e-4, "gamma": 0.99, "entropy_coeff": 0.01, "grad_clip": 0.5},
    "PPO": {"num_envs_per_worker": 8, "train_batch_size": 1024, "minibatch_size": 256, "num_epochs": 4,
            "lr": 2.5e-4, "lr_decay_timesteps": 0, "gamma": 0.99, "gae_lambda": 0.95, "entropy_coeff": 0.01},
}


def algorithm_available(name: str) -> bool:
    import unirl

    try:
        unirl.get_algorithm_class(name)
        return True
    except Exception:
        return False


def train_for(algo_name: str, game: str, budget_s: float, seed: int = 0, backend: str = "local") -> dict:
    import unirl

    cls = unirl.get_algorithm_class(algo_name)
    cfg = dict(CONFIGS[algo_name], env=f"MinAtar/{game}-v1", seed=seed, backend=backend, model=MODEL)
    cfg = {k: v for k, v in cfg.items() if k in cls.config_class.field_names()}
    algo = unirl.build(algo_name, cfg)
    t0 = time.perf_counter()
    curve = []
    try:
        while time.perf_counter() - t0 < budget_s:
            r = algo.train()
            curve.append((r["timesteps_total"], r["episode_return_mean"], time.perf_counter() - t0))
        evaluation = algo.evaluate(10)["evaluation/episode_return_mean"]
    finally:
        algo.stop()
    return {"algo": algo_name, "game": game, "steps": curve[-1][0] if curve else 0,
            "train_return": curve[-1][1] if curve else float("nan"), "eval_return": evaluation,
            "wall_s": time.perf_counter() - t0, "curve": curve}


def table(results: list[dict], algos: list[str], seed_games: list[str]) -> str:
    lines = []
    head = "| algorithm | " + " | ".join(f"{GAMES[g]} (MinAtar) / {g} (seed)" for g in seed_games) + " |"
    lines.append(head)
    lines.append("|" + "---|" * (len(seed_games) + 1))
    by = {(r["algo"], r["game"]): r for r in results}
    for a in algos:
        cells = []
        for g in seed_games:
            r = by.get((a, GAMES[g]))
            ours = f"{r['train_return']:.1f} ({r['steps'] // 1000}k steps)" if r else "-"
            seed = SEED_TABLE.get(a, {}).get(g, "-")
            cells.append(f"{ours} / {seed}")
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: list[dict], path: str, budget_s: float) -> None:
    """One panel per game: each algorithm's training return (mean of the last 100 episodes) against wall time."""
    from unirl.plot import pyplot

    plt = pyplot()
    games = list(dict.fromkeys(r["game"] for r in results))
    fig, axes = plt.subplots(1, len(games), figsize=(4 * len(games), 3.2), squeeze=False)
    for ax, game in zip(axes[0], games):
        for r in (r for r in results if r["game"] == game):
            xs = [t for _, _, t in r["curve"]]
            ax.plot(xs, [v for _, v, _ in r["curve"]], label=f"{r['algo']} ({r['steps'] // 1000}k steps)")
        ax.set_title(f"MinAtar {game}")
        ax.set_xlabel("wall-clock time (s)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("mean training return (last 100 episodes)")
    fig.suptitle(f"seed table at small scale: {budget_s:.0f} s per run on this machine", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def print_run(r: dict) -> None:
    print(f"{r['algo']:7s} {r['game']:14s} {r['steps']:>9d} steps  train {r['train_return']:8.2f}  "
          f"greedy {r['eval_return']:8.2f}  {r['wall_s']:.0f} s", flush=True)


def merge(paths: list[str]) -> list[dict]:
    """The results of several --json files, in game order then algorithm order; a run present twice is an error."""
    results, seen = [], set()
    for path in paths:
        with open(path) as f:
            for r in json.load(f):
                key = (r["algo"], r["game"])
                if key in seen:
                    raise SystemExit(f"seed_table --merge: {r['algo']} on {r['game']} appears twice (in {path})")
                seen.add(key)
                results.append(r)
    games, algos = list(GAMES.values()), [*SEED_TABLE, "PPO"]

    def rank(name, names):
        return names.index(name) if name in names else len(names)

    return sorted(results, key=lambda r: (rank(r["game"], games), rank(r["algo"], algos)))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", type=float, default=60.0, help="wall-clock seconds per (algorithm, game) run")
    p.add_argument("--games", nargs="*", default=list(GAMES), help="seed game names (mapped to MinAtar)")
    p.add_argument("--algos", nargs="*", default=["IMPALA", "A2C", "A3C"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default="local")
    p.add_argument("--json", default="", help="write the results (with learning curves) here")
    p.add_argument("--plot", default="", help="write the learning curves to this PNG (e.g. docs/seed_table.png)")
    p.add_argument("--merge", nargs="+", default=[], metavar="JSON",
                   help="train nothing: join the --json files of earlier runs (e.g. two halves run side by side, "
                        "one core each) and print, plot or write them as one table")
    args = p.parse_args(argv)
    budget = args.budget
    if args.merge:
        results = merge(args.merge)
        algos = list(dict.fromkeys(r["algo"] for r in results))
        played = {r["game"] for r in results}
        seed_games = [g for g in GAMES if GAMES[g] in played]
        budget = max(r["wall_s"] for r in results)
        for r in results:
            print_run(r)
    else:
        algos = list(dict.fromkeys(a if algorithm_available(a) else "PPO" for a in args.algos))
        seed_games = [g for g in args.games if g in GAMES]
        results = []
        for a in algos:
            for g in seed_games:
                results.append(train_for(a, GAMES[g], budget, args.seed, args.backend))
                print_run(results[-1])  # as each run ends: the long table takes hours
    print()
    print(f"Final mean training return after {budget:.0f} s per run, beside the seed's Atari scores:")
    print(table(results, algos, seed_games))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f)
    if args.plot:
        plot(results, args.plot, budget)


if __name__ == "__main__":
    main()
