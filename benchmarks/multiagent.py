"""Multi-agent benchmarks: MPE2 simple_spread (shared and independent PPO), Connect Four by self-play PPO with masks,
tic-tac-toe by DQN with masks against a random player, and multi-agent throughput per backend.

    python benchmarks/multiagent.py spread --budget 2000000 [--independent]
    python benchmarks/multiagent.py spread-baselines           # random and scripted policies, 1,000 episodes
    python benchmarks/multiagent.py connect4 --budget 2000000 --checkpoints 200000
    python benchmarks/multiagent.py tictactoe --budget 100000
    python benchmarks/multiagent.py throughput

Each prints one JSON line per measurement (and `--out FILE` appends them), with the command's settings.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

import unirl
from unirl.multi_agent.evaluation import play_against, random_player

SPREAD = "mpe2.simple_spread_v3"
CONNECT4 = "classic/connect_four-v3"
TICTACTOE = "classic/tictactoe-v3"

#: Shared-policy PPO on simple_spread: 16 envs, 800 env steps (2,400 agent steps) per iteration.
SPREAD_CONFIG = {"env": SPREAD, "backend": "multiprocessing", "num_workers": 2, "num_envs_per_worker": 8,
                 "train_batch_size": 800, "minibatch_size": 400, "num_epochs": 10, "gamma": 0.99,
                 "gae_lambda": 0.95, "lr": 7e-4, "lr_decay_timesteps": 0, "entropy_coeff": 0.01, "grad_clip": 0.5,
                 "model": {"hidden_sizes": [64, 64]}}
#: Self-play PPO on Connect Four: the learner against a league of its own snapshots, seats alternating over envs.
CONNECT4_CONFIG = {"env": CONNECT4, "backend": "multiprocessing", "num_workers": 2, "num_envs_per_worker": 8,
                   "train_batch_size": 1024, "minibatch_size": 256, "num_epochs": 10, "gamma": 0.99,
                   "gae_lambda": 0.95, "lr": 1e-3, "lr_decay_timesteps": 0, "entropy_coeff": 0.01, "grad_clip": 0.5,
                   "model": {"hidden_sizes": [256, 256], "activation": "relu", "conv_filters": []},
                   "multi_agent": {"policies": {"main": {}, "opponent": {}},
                                   "self_play": {"learner": "main", "opponent": "opponent", "window": 400,
                                                 "snapshot_win_rate": 0.75, "league_size": 16,
                                                 "latest_probability": 0.2}}}
#: DQN with masks on tic-tac-toe against a uniformly random legal player (epsilon 1 throughout, never trained).
TICTACTOE_CONFIG = {"env": TICTACTOE, "num_workers": 1, "num_envs_per_worker": 8, "train_batch_size": 64,
                    "lr": 1e-3, "gamma": 0.99, "n_step": 1, "learning_starts": 1000, "replay_batch_size": 64,
                    "target_network_update_freq": 500, "exploration_timesteps": 20_000,
                    "model": {"hidden_sizes": [128, 128], "activation": "relu"},
                    "multi_agent": {"policies": {"dqn": {}, "random": {"exploration_initial_eps": 1.0,
                                                                      "exploration_final_eps": 1.0}},
                                    "policy_mapping": "unirl.benchmarks.multiagent:alternate_seats",
                                    "policies_to_train": ["dqn"]}}


def alternate_seats(agent: str, env_index: int) -> str:
    """Tic-tac-toe seats: the learner plays player_1 in even envs and player_2 in odd ones."""
    return "dqn" if (agent == "player_1") == (env_index % 2 == 0) else "random"


def emit(record: dict, out: str | None) -> None:
    line = json.dumps(record)
    print(line, flush=True)
    if out:
        with open(out, "a") as f:
            f.write(line + "\n")


# -- simple_spread -------------------------------------------------------------------------------------------
def spread_scripted(obs: np.ndarray, agent_index: int) -> int:
    """`agent i walks to landmark i`: the discrete move along the larger axis of landmark i's relative position
    (observation: velocity 2, position 2, landmarks' relative positions 3 x 2, ...; actions: no-op, -x, +x, -y, +y)."""
    rel = obs[4 + 2 * agent_index: 6 + 2 * agent_index]
    if np.all(np.abs(rel) < 0.05):
        return 0
    if abs(rel[0]) >= abs(rel[1]):
        return 2 if rel[0] > 0 else 1
    return 4 if rel[1] > 0 else 3


def spread_baselines(episodes: int, out: str | None) -> None:
    from unirl.multi_agent.env import EnvInfo
    from unirl.multi_agent.evaluation import play

    info = EnvInfo(SPREAD)
    rng = np.random.default_rng(0)
    for name in ("random", "scripted"):
        def choose(decisions):
            if name == "random":
                return [int(rng.integers(5)) for _ in decisions]
            return [spread_scripted(o, info.agents.index(a)) for _, a, o in decisions]

        games = play(SPREAD, {}, info.obs_spaces, episodes, 0, choose)
        totals = np.array([g[0].sum() for g in games])
        emit({"bench": "spread-baseline", "policy": name, "episodes": episodes, "return_mean": float(totals.mean()),
              "return_std": float(totals.std())}, out)


def train(config: dict, budget: int, label: str, out: str | None, every: int = 20, on_check=None,
          check_every: int = 0) -> object:
    algo = unirl.build(config.pop("_algo", "PPO"), config)
    t0 = time.time()
    next_check = check_every
    while True:
        r = algo.train()
        if r["iteration"] % every == 0:
            print(json.dumps({"label": label, "steps": r["timesteps_total"], "return": r["episode_return_mean"],
                              "s": round(time.time() - t0), **{k: v for k, v in r.items()
                                                               if k.startswith(("policy/", "league/"))}}),
                  flush=True)
        if check_every and r["timesteps_total"] >= next_check and on_check is not None:
            on_check(algo, r["timesteps_total"], time.time() - t0)
            next_check += check_every
        if r["timesteps_total"] >= budget:
            break
    algo.wall_s = time.time() - t0
    return algo


def spread(args) -> None:
    config = dict(SPREAD_CONFIG, seed=args.seed)
    label = "spread-shared"
    if args.independent:
        config["multi_agent"] = {"policies": {f"agent_{i}": {} for i in range(3)}}
        label = "spread-independent"
    algo = train(config, args.budget, label, args.out)
    ev = algo.evaluate(args.episodes)
    emit({"bench": label, "seed": args.seed, "env_steps": algo.timesteps_total, "wall_s": round(algo.wall_s),
          "train_return_mean": float(np.mean(algo.recent_returns)),
          "greedy_return_mean": ev["evaluation/episode_return_mean"], "episodes": args.episodes,
          "config": config}, args.out)
    algo.stop()


# -- Connect Four ----------------------------------------------------------------------------------------------
def connect4_lookahead(obs: np.ndarray, rng: np.random.Generator) -> int:
    """One-step lookahead: win now if a move wins, else block the opponent's immediate win, else a random legal
    move (observation: 6 x 7 x 2 planes, the mover's pieces first, then the 7-entry legal-move mask)."""
    planes = np.asarray(obs[:84]).reshape(6, 7, 2)
    legal = np.flatnonzero(np.asarray(obs[84:91]) > 0)
    for plane in (0, 1):  # my winning move first, then the opponent's (to block)
        for col in legal:
            board = planes[:, :, plane].copy()
            occupied = planes[:, col, 0] + planes[:, col, 1]
            row = int(np.flatnonzero(occupied == 0).max())
            board[row, col] = 1
            if _four(board):
                return int(col)
    return int(legal[rng.integers(len(legal))])


def _four(b: np.ndarray) -> bool:
    for dr, dc in ((0, 1), (1, 0), (1, 1), (1, -1)):
        for r in range(6):
            for c in range(7):
                if all(0 <= r + k * dr < 6 and 0 <= c + k * dc < 7 and b[r + k * dr, c + k * dc] for k in range(4)):
                    return True
    return False


def connect4(args) -> None:
    config = dict(CONNECT4_CONFIG, seed=args.seed)

    def check(algo, steps, wall):
        rec = {"bench": "connect4-selfplay", "seed": args.seed, "env_steps": steps, "wall_s": round(wall)}
        for name, opp in (("random", random_player(7)), ("lookahead", connect4_lookahead)):
            res = play_against(algo, "main", opp, args.games, seed=1)
            rec[f"vs_{name}_win_rate"] = res["win_rate"]
            rec[f"vs_{name}_draw_rate"] = res["draw_rate"]
        rec["league_size"] = len(algo.league.members)
        emit(rec, args.out)

    algo = train(config, args.budget, "connect4", args.out, on_check=check, check_every=args.checkpoints)
    algo.stop()


# -- tic-tac-toe -----------------------------------------------------------------------------------------------
def tictactoe(args) -> None:
    config = dict(TICTACTOE_CONFIG, seed=args.seed, _algo="DQN")
    algo = train(config, args.budget, "tictactoe", args.out)
    res = play_against(algo, "dqn", random_player(9), args.games, seed=1)
    emit({"bench": "tictactoe-dqn-vs-random", "seed": args.seed, "env_steps": algo.timesteps_total,
          "wall_s": round(algo.wall_s), "non_loss_rate": res["win_rate"] + res["draw_rate"], **res}, args.out)
    algo.stop()


# -- throughput ------------------------------------------------------------------------------------------------
def _rates(backend: str, iterations: int) -> list:
    """[(num_workers, env steps/s)] of shared-policy PPO on simple_spread with 1 and 2 workers (16 envs in all)."""
    rows = []
    for workers in (1, 2):
        config = dict(SPREAD_CONFIG, backend=backend, num_workers=workers, num_envs_per_worker=16 // workers)
        algo = unirl.build("PPO", config)
        try:
            algo.train()  # warm-up
            t0, s0 = time.time(), algo.timesteps_total
            for _ in range(iterations):
                algo.train()
            rows.append((workers, (algo.timesteps_total - s0) / (time.time() - t0)))
        finally:
            algo.stop()
    return rows


def mpi_rates_main(iterations: int, out_path: str) -> None:
    """Every rank of the MPI job: rank 0 measures (its backends place workers on ranks 1..n), the others serve."""
    rows = _rates("mpi", iterations)
    from mpi4py import MPI

    if MPI.COMM_WORLD.Get_rank() == 0:
        with open(out_path, "w") as f:
            json.dump(rows, f)


def _mpi_rates(iterations: int) -> list:
    import os
    import subprocess
    import sys
    import tempfile

    from unirl.backends.base import worker_env
    from unirl.backends.mpi import find_mpiexec, launch_command

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rates.json")
        code = f"from unirl.benchmarks.multiagent import mpi_rates_main; mpi_rates_main({iterations}, {out!r})"
        env = dict(os.environ)
        env.update(worker_env(1))
        proc = subprocess.run(launch_command(find_mpiexec(), 3, [sys.executable, "-c", code]), capture_output=True,
                              text=True, timeout=1200, env=env)
        if proc.returncode != 0 or not os.path.exists(out):
            raise SystemExit(f"the MPI job failed ({proc.returncode}): {(proc.stderr or proc.stdout)[-800:]}")
        with open(out) as f:
            return [tuple(r) for r in json.load(f)]


def throughput(args) -> None:
    """Env steps per second with 1 and 2 workers on each backend, and each as a ratio to the same backend's 1 worker
    (the backends measured one after the other in one command: compare ratios, not absolute rates across runs)."""
    for backend in args.backends:
        rows = _mpi_rates(args.iterations) if backend == "mpi" else _rates(backend, args.iterations)
        base = rows[0][1]
        for workers, rate in rows:
            emit({"bench": "spread-throughput", "backend": backend, "num_workers": workers,
                  "env_steps_per_s": round(rate), "ratio_to_1_worker": round(rate / base, 3),
                  "iterations": args.iterations}, args.out)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["spread", "spread-baselines", "connect4", "tictactoe", "throughput"])
    p.add_argument("--budget", type=int, default=2_000_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--episodes", type=int, default=1000)
    p.add_argument("--games", type=int, default=1000)
    p.add_argument("--checkpoints", type=int, default=200_000, help="connect4: evaluate every this many env steps")
    p.add_argument("--independent", action="store_true")
    p.add_argument("--backends", nargs="+", default=["multiprocessing", "ray", "mpi"])
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--out")
    args = p.parse_args(argv)
    if args.what == "spread-baselines":
        spread_baselines(args.episodes, args.out)
    else:
        {"spread": spread, "connect4": connect4, "tictactoe": tictactoe, "throughput": throughput}[args.what](args)


if __name__ == "__main__":
    main()
