"""Self-play with a league: the opponent policy is a frozen snapshot of the learning policy.

    "multi_agent": {
        "policies": {"main": {}, "opponent": {}},
        "self_play": {"learner": "main", "opponent": "opponent", "snapshot_win_rate": 0.6, "window": 200,
                      "league_size": 8, "latest_probability": 0.5},
    }

The league starts with the learner's initial weights. Before each iteration the opponent's weights are set to one
member: the newest with probability `latest_probability`, else one of the older ones uniformly, drawn from the
league's own generator (keyed by the run seed), so the choice is the same on every backend and after a resume.
When the learner has won at least `snapshot_win_rate` of the last `window` games (a win: its agent's return is
positive), its current weights join the league (the oldest member leaves beyond `league_size`) and the count starts
over. Seats alternate over envs (the learner plays agent `env index mod number of agents`, the opponent the
others) unless `policy_mapping` is given. The league (its members, generator, recent results) is in checkpoints.
"""
from __future__ import annotations

import collections

import numpy as np

from unirl import seeding
from unirl.errors import UnirlError, did_you_mean

DEFAULTS = {"learner": None, "opponent": None, "snapshot_win_rate": 0.6, "window": 200, "league_size": 8,
            "latest_probability": 0.5}
#: Seed stream of the league's opponent draws.
LEAGUE_STREAM = 15


def check_self_play(sp, policies: dict) -> None:
    if not isinstance(sp, dict):
        raise UnirlError(f"multi_agent `self_play` must be a dict, got {sp!r}.")
    for key in sp:
        if key not in DEFAULTS:
            raise UnirlError(f"unknown self_play key `{key}`." + did_you_mean(key, list(DEFAULTS))
                             + f" Valid keys: {', '.join(DEFAULTS)}.")
    for key in ("learner", "opponent"):
        if sp.get(key) not in policies:
            raise UnirlError(f"self_play `{key}` must name one of the policies {sorted(policies)}, got "
                             f"{sp.get(key)!r}.")
    if sp["learner"] == sp["opponent"]:
        raise UnirlError("self_play `learner` and `opponent` must be two different policies.")
    opts = {**DEFAULTS, **sp}
    if not 0.0 <= float(opts["snapshot_win_rate"]) <= 1.0 or not 0.0 <= float(opts["latest_probability"]) <= 1.0:
        raise UnirlError("self_play `snapshot_win_rate` and `latest_probability` must lie in [0, 1].")
    for key in ("window", "league_size"):
        if not isinstance(opts[key], int) or isinstance(opts[key], bool) or opts[key] < 1:
            raise UnirlError(f"self_play `{key}` must be a positive integer, got {opts[key]!r}.")


def seat_mapping(sp: dict, agents: list, num_envs: int) -> dict:
    """{env: {agent: policy}}: the learner plays seat `env mod len(agents)`, the opponent every other seat."""
    return {g: {a: sp["learner"] if j == g % len(agents) else sp["opponent"] for j, a in enumerate(agents)}
            for g in range(num_envs)}


class League:
    """Snapshots of the learner, the opponent drawn from them each iteration, snapshots added by win rate."""

    def __init__(self, config, learners: dict):
        opts = {**DEFAULTS, **config.multi_agent["self_play"]}
        self.learner, self.opponent = opts["learner"], opts["opponent"]
        self.threshold = float(opts["snapshot_win_rate"])
        self.window = int(opts["window"])
        self.size = int(opts["league_size"])
        self.latest = float(opts["latest_probability"])
        self.learners = learners
        self.members = [learners[self.learner].policy.get_flat_weights().copy()]
        self.rng = np.random.Generator(np.random.PCG64(seeding.seed_sequence(config.seed, LEAGUE_STREAM)))
        self.results = collections.deque(maxlen=self.window)
        self.current = 0
        self.snapshots_added = 0

    def choose_opponent(self, iteration: int) -> None:
        """Set the opponent's weights to a league member for the coming iteration."""
        u = self.rng.random(2)
        n = len(self.members)
        if n == 1 or u[0] < self.latest:
            self.current = n - 1
        else:
            self.current = min(int(u[1] * (n - 1)), n - 2)
        self.learners[self.opponent].policy.set_flat_weights(self.members[self.current])

    def record(self, games: list, mapping: dict, agents: list) -> None:
        """The learner's outcome (+1 win, 0 draw, -1 loss) in each finished game, in order."""
        for _, env_index, returns, _ in games:
            for j, a in enumerate(agents):
                if mapping[env_index][a] == self.learner:
                    self.results.append(float(np.sign(returns[j])))

    def win_rate(self) -> float:
        return float(np.mean(np.asarray(self.results) > 0)) if self.results else 0.0

    def update(self, iteration: int) -> dict:
        """Add the learner's weights to the league when it beats the opponents often enough."""
        if len(self.results) >= self.window and self.win_rate() >= self.threshold:
            self.members.append(self.learners[self.learner].policy.get_flat_weights().copy())
            if len(self.members) > self.size:
                self.members.pop(0)
            self.results.clear()
            self.snapshots_added += 1
        return {}

    def metrics(self) -> dict:
        return {"league/size": len(self.members), "league/snapshots_added": self.snapshots_added,
                "league/opponent": self.current, "league/win_rate": self.win_rate()}

    def get_state(self) -> tuple[dict, dict]:
        arrays = {f"league/member{i}": w for i, w in enumerate(self.members)}
        return arrays, {"members": len(self.members), "rng": self.rng.bit_generator.state,
                        "results": list(self.results), "current": self.current,
                        "snapshots_added": self.snapshots_added}

    def set_state(self, arrays: dict, state: dict) -> None:
        self.members = [np.asarray(arrays[f"league/member{i}"], np.float32) for i in range(state["members"])]
        self.rng.bit_generator.state = state["rng"]
        self.results.clear()
        self.results.extend(state["results"])
        self.current = int(state["current"])
        self.snapshots_added = int(state["snapshots_added"])
        self.learners[self.opponent].policy.set_flat_weights(self.members[self.current])
