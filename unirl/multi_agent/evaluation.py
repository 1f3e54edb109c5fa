"""Playing whole games of a PettingZoo env with any players: greedy policies, scripted opponents, a uniform random
legal player. Game k's env is seeded from (seed, k) on the evaluation stream, so two evaluations of the same
players play the same games."""
from __future__ import annotations

import numpy as np

from unirl import seeding


def play(env_id: str, env_config: dict | None, obs_spaces: dict, num_games: int, seed: int, choose,
         max_parallel: int = 64) -> list:
    """Play `num_games` games; `choose(decisions) -> actions` gets the pending decisions of all running games as
    (game index, agent, flat observation) and returns one env action each. Returns, per game in order,
    (returns per agent as an array in the env's agent order, length in env steps)."""
    from unirl.multi_agent.env import MultiAgentEnv

    results = [None] * num_games
    for start in range(0, num_games, max_parallel):
        games = list(range(start, min(num_games, start + max_parallel)))
        envs = {k: MultiAgentEnv(env_id, env_config, obs_spaces) for k in games}
        agents = list(next(iter(envs.values())).env.possible_agents)
        returns = {k: np.zeros(len(agents)) for k in games}
        length = dict.fromkeys(games, 0)
        try:
            for k in games:
                envs[k].reset(seed=seeding.env_reset_seed(seed, k, seeding.EVALUATION))
            running = set(games)
            while running:
                decisions = []
                for k in sorted(running):
                    env = envs[k]
                    while True:
                        completed, decide, finished = env.poll()
                        for agent, (r, *_rest) in completed.items():
                            returns[k][agents.index(agent)] += r
                        if finished:
                            results[k] = (returns[k], length[k])
                            running.discard(k)
                            break
                        if decide:
                            decisions += [(k, a, o) for a, o in decide.items()]
                            break
                        env.act({})
                if not decisions:
                    continue
                actions = choose(decisions)
                by_game: dict = {}
                for (k, agent, _), a in zip(decisions, actions):
                    by_game.setdefault(k, {})[agent] = a
                for k, acts in by_game.items():
                    envs[k].act(acts)
                    length[k] += 1
        finally:
            for env in envs.values():
                env.close()
    return results


def random_legal(obs: np.ndarray, mask_size: int, rng: np.random.Generator) -> int:
    """A uniformly random legal action from a flat observation whose last `mask_size` entries are the mask."""
    legal = np.flatnonzero(np.asarray(obs)[-mask_size:] > 0)
    return int(legal[rng.integers(len(legal))])


def play_against(run, policy_id: str, opponent, num_games: int, seed: int = 0) -> dict:
    """Greedy games of policy `policy_id` of a multi-agent run against `opponent(obs, rng) -> action` (a scripted
    player; `random_player` plays uniformly among the legal moves): game k's policy plays seat k mod the number of
    agents (so every seat equally), the opponent every other seat, its randomness from (seed, k). Returns the
    policy's win, draw and loss rates (the sign of its return) and its mean return."""
    info = run.env_info
    agents = info.agents
    policy = run.learners[policy_id].policy if policy_id in getattr(run, "learners", {}) else run.policy
    rngs = [seeding.generator(seed, seeding.EVALUATION, k, 1) for k in range(num_games)]

    def choose(decisions):
        out = [None] * len(decisions)
        mine = [i for i, (k, a, _) in enumerate(decisions) if agents.index(a) == k % len(agents)]
        if mine:
            acts = policy.compute_actions(np.stack([decisions[i][2] for i in mine]).astype(np.float32))
            for j, i in enumerate(mine):
                out[i] = policy.dist.env_actions(acts[j:j + 1])[0]
        for i, (k, a, obs) in enumerate(decisions):
            if out[i] is None:
                out[i] = opponent(obs, rngs[k])
        return out

    games = play(run.config.env, run.config.env_config, info.obs_spaces, num_games, seed, choose)
    mine = np.array([g[0][k % len(agents)] for k, g in enumerate(games)])
    return {"win_rate": float(np.mean(mine > 0)), "draw_rate": float(np.mean(mine == 0)),
            "loss_rate": float(np.mean(mine < 0)), "return_mean": float(mine.mean()), "games": num_games}


def random_player(mask_size: int):
    """An opponent for `play_against`: a uniformly random legal move (the mask is the observation's last entries)."""
    def act(obs, rng):
        return random_legal(obs, mask_size, rng)
    return act
