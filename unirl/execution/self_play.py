"""Self-play actors (AlphaZero): stateful workers that play whole games by PUCT search against themselves.

A round of self-play is a range of *global* game indices. Game g draws every random number it uses (the
Dirichlet noise at each root, the uniform that picks each move) from its own generator, keyed by (run seed,
SELF_PLAY, g); the searches of all the games a worker plays at once share one batched network call per
simulation, and the network's rows do not depend on the batch (unirl.mcts). So a game's moves depend only on
(run seed, g, weights, search settings): which worker plays it, how many games share its batches and how many
workers there are change no bit, and the driver joins results by game index (unirl.execution.indexed).

Free-running (an asynchronous actor of unirl.execution.async_samples), each request names its games and carries
the weights and settings to play them with: the driver hands out game indices in the order it requests, so a run
replayed from its recorded arrival schedule requests the same games with the same weights, bit for bit.

A worker's answer for games [start, stop) is one row per move, in (game, move) order: the network's input
(observation and legal-move mask), the root's visit distribution (the policy target), the final return of the
player who moved (the value target), and per game its length and player 0's return.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from unirl import seeding
from unirl.mcts import SearchConfig, choose_move, encode, gumbel_result, search
from unirl.policy import PolicySpec

OBS, PI, Z = "obs", "pi", "z"


@dataclass
class SelfPlaySpec:
    """What a self-play worker builds itself from (plain data)."""

    policy: PolicySpec
    game: str
    seed: int
    #: "framework": the network through the policy's adapter; "numpy": its forward pass on the NumPy ops.
    forward: str = "framework"


def network_evaluator(policy=None, module=None, flat=None):
    """`evaluate(obs) -> (logits, values)` of the policy-value network: through a built policy's adapter, or (module
    and flat weights) on the NumPy ops."""
    if policy is not None:
        def evaluate(obs):
            out = policy.forward(obs)
            return out["dist_inputs"], out["values"]
        return evaluate
    from unirl.ops import numpy_ops

    params = module.layout.unflatten_numpy(np.asarray(flat, np.float32))

    def evaluate_numpy(obs):
        out = module.forward_train(numpy_ops, params, obs)
        return out["dist_inputs"], out["values"]
    return evaluate_numpy


def play_games(game, evaluate, indices, seed: int, settings: SearchConfig, temperature_moves: int) -> dict:
    """Self-play games `indices` together (each from its own generator); their rows in (game, move) order."""
    num_actions = game.num_distinct_actions()
    states = [game.new_initial_state() for _ in indices]
    rngs = [seeding.generator(seed, seeding.SELF_PLAY, g) for g in indices]
    moves: list[list] = [[] for _ in indices]
    active = list(range(len(indices)))
    while active:
        roots, visits = search([states[i] for i in active], evaluate, num_actions, settings, [rngs[i] for i in active])
        for k, i in enumerate(active):
            s = states[i]
            u = rngs[i].random()
            if settings.gumbel:  # the improved policy as the target, the sequential-halving survivor as the move
                target, action = gumbel_result(roots[k], num_actions, settings)
            else:
                target = visits[k] / visits[k].sum()
                action = choose_move(visits[k], u, sample=len(moves[i]) < temperature_moves)
            moves[i].append((encode(s, num_actions), target, s.current_player()))
            s.apply_action(action)
        active = [i for i in active if not states[i].is_terminal()]
    returns = [np.asarray(s.returns(), np.float32) for s in states]
    obs = [m[0] for game_moves in moves for m in game_moves]
    return {OBS: np.stack(obs).astype(np.float32),
            PI: np.stack([m[1] for game_moves in moves for m in game_moves]).astype(np.float32),
            Z: np.array([r[m[2]] for r, game_moves in zip(returns, moves) for m in game_moves], np.float32),
            "game": np.repeat(np.asarray(indices, np.int64), [len(m) for m in moves]),
            "lengths": np.array([len(m) for m in moves], np.int64),
            "returns": np.array([r[0] for r in returns], np.float64)}


class SelfPlayWorker:
    """Plays self-play games with the broadcast weights and search settings: set_weights, then play(start, stop)."""

    def __init__(self, spec: SelfPlaySpec):
        from unirl.arena import load_game

        self.spec = spec
        self.game = load_game(spec.game)
        self.module = spec.policy.module
        self.policy = spec.policy.build() if spec.forward == "framework" else None
        self.evaluate = None
        self.settings = SearchConfig()
        self.temperature_moves = 0

    @staticmethod
    def preload_modules(spec: SelfPlaySpec) -> list[str]:
        return spec.policy.preload_modules() if spec.forward == "framework" else []

    def set_weights(self, flat_weights: np.ndarray, settings: dict) -> None:
        """The network's weights and the search settings of this round (SearchConfig keys, temperature_moves)."""
        settings = dict(settings)
        self.temperature_moves = int(settings.pop("temperature_moves"))
        self.settings = replace(SearchConfig(), **settings)
        if self.policy is not None:
            self.policy.set_flat_weights(np.asarray(flat_weights, np.float32))
            self.evaluate = network_evaluator(self.policy)
        else:
            self.evaluate = network_evaluator(module=self.module, flat=flat_weights)

    def play(self, start: int, stop: int) -> dict:
        return play_games(self.game, self.evaluate, range(start, stop), self.spec.seed, self.settings,
                          self.temperature_moves)

    def sample(self, flat_weights: np.ndarray, start: int, stop: int, settings: dict) -> dict:
        """Free-running self-play (an AsyncSamples actor): games [start, stop) with these weights and settings."""
        self.set_weights(flat_weights, settings)
        return self.play(start, stop)
