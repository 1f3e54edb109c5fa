"""The evaluation arena for two-player zero-sum OpenSpiel games (tic_tac_toe, connect_four): fixed opponents and
seat-balanced matches, used to judge a learned player such as AlphaZero.

A player is any object with a `name: str` and `choose(state, rng) -> int`: `state` is a `pyspiel.State` that is
neither terminal nor a chance node, with `state.current_player()` to move; `rng` is a `numpy.random.Generator` and
the only randomness the player may use; the answer is one of `state.legal_actions()`. A player must not change
`state` (it clones it to look ahead). Three reference players come with the arena:

- `RandomPlayer()`: uniform over the legal moves.
- `MinimaxPlayer(game)`: exact play (a memoised negamax over the whole tree) for small games like tic_tac_toe,
  choosing at random among the optimal moves; it never loses a game that can be held.
- `MCTSPlayer(game, num_simulations=400)`: OpenSpiel's own MCTS with random rollouts, the standard baseline.

`match(game, player, opponent, num_games, seed)` plays `num_games` (even) games and alternates the seats game by
game: `player` moves first in games 0, 2, 4, ... and second in games 1, 3, 5, ..., so a first-move advantage
cancels out. Game k draws all its randomness (both players' and chance's) from one generator seeded with
`SeedSequence([seed, k])`, so a match is a function of its seed: the same seed gives the same games and the same
counts, and game k does not depend on how many games come before it.

    game = load_game("tic_tac_toe")
    result = match(game, MCTSPlayer(game), MinimaxPlayer(game), num_games=20, seed=0)
    result["score"]  # (wins + draws / 2) / games, from the first player's view
"""
from __future__ import annotations

from typing import Protocol

import numpy as np

from unirl.errors import UnirlError, did_you_mean, missing_extra

# MinimaxPlayer refuses games that can last longer than this: exact search is only for small trees.
MINIMAX_MAX_GAME_LENGTH = 12
# ... and stops with an error if a game's tree still turns out to hold more distinct states than this.
MINIMAX_MAX_STATES = 1_000_000


class Player(Protocol):
    """Anything that can play in the arena."""

    name: str

    def choose(self, state, rng: np.random.Generator) -> int:
        """A legal action for `state.current_player()`; `state` stays unchanged, `rng` is the only randomness."""


def _pyspiel():
    try:
        import pyspiel
    except ImportError:
        raise missing_extra("open_spiel", "games", "the game arena (unirl.arena)") from None
    return pyspiel


def is_two_player_zero_sum(game) -> bool:
    """Whether an OpenSpiel game has two players, zero-sum payoffs, no chance, perfect information and turns (what
    exact minimax and AlphaZero's search take)."""
    pyspiel = _pyspiel()
    info = game.get_type()
    return (game.num_players() == 2 and info.utility == pyspiel.GameType.Utility.ZERO_SUM
            and info.chance_mode == pyspiel.GameType.ChanceMode.DETERMINISTIC
            and info.information == pyspiel.GameType.Information.PERFECT_INFORMATION
            and info.dynamics == pyspiel.GameType.Dynamics.SEQUENTIAL)


def load_game(name: str):
    """The OpenSpiel game `name` (parameters allowed: "connect_four(rows=5)"), or a UnirlError that names the
    closest known game."""
    pyspiel = _pyspiel()
    short_name = name.split("(", 1)[0].strip()
    known = list(pyspiel.registered_names())
    if short_name not in known:
        examples = ", ".join(n for n in ("tic_tac_toe", "connect_four", "hex", "breakthrough") if n in known)
        raise UnirlError(f"unknown OpenSpiel game `{name}`." + did_you_mean(short_name, known)
                         + f" Known games include {examples} (pyspiel.registered_names() lists all {len(known)}).")
    try:
        return pyspiel.load_game(name)
    except pyspiel.SpielError as e:
        raise UnirlError(f"OpenSpiel could not load `{name}`: {str(e).splitlines()[0]}") from None


def _as_game(game):
    return load_game(game) if isinstance(game, str) else game


def _game_name(game) -> str:
    return game.get_type().short_name


class RandomPlayer:
    """Uniform over the legal moves."""

    name = "random"

    def choose(self, state, rng: np.random.Generator) -> int:
        legal = state.legal_actions()
        return int(legal[rng.integers(len(legal))])


class MinimaxPlayer:
    """Exact play for small two-player zero-sum deterministic perfect-information games (tic_tac_toe).

    `value(state)` is the game-theoretic value for the player to move (+1 win, 0 draw, -1 loss with
    tic_tac_toe's returns); `choose` picks uniformly at random among the moves of optimal value, so games against
    it differ from one another. Values are memoised per instance, keyed by the board and the player to move; the
    whole tic_tac_toe tree (5,478 states) is solved in well under a second.
    """

    def __init__(self, game):
        pyspiel = _pyspiel()
        game = _as_game(game)
        game_type = game.get_type()
        name = _game_name(game)
        if not is_two_player_zero_sum(game):
            raise UnirlError(f"MinimaxPlayer needs a two-player zero-sum deterministic perfect-information game "
                             f"with turns, and `{name}` is not one.")
        if game.max_game_length() > MINIMAX_MAX_GAME_LENGTH:
            raise UnirlError(f"exact minimax is only for small games like tic_tac_toe, and `{name}` can last "
                             f"{game.max_game_length()} moves (the limit is {MINIMAX_MAX_GAME_LENGTH}); "
                             "use MCTSPlayer as its opponent instead.")
        self.game = game
        self.name = "minimax"
        self._player0_value = {}  # (str(state), player to move) -> value for player 0

    def _value0(self, state) -> float:
        """The exact value of `state` for player 0."""
        if state.is_terminal():
            return float(state.returns()[0])
        key = (str(state), state.current_player())
        value = self._player0_value.get(key)
        if value is None:
            if len(self._player0_value) >= MINIMAX_MAX_STATES:
                raise UnirlError(f"exact minimax gave up on `{_game_name(self.game)}` after "
                                 f"{MINIMAX_MAX_STATES:,} states; it is only for small games like tic_tac_toe.")
            children = [self._value0(state.child(a)) for a in state.legal_actions()]
            value = max(children) if state.current_player() == 0 else min(children)
            self._player0_value[key] = value
        return value

    def value(self, state) -> float:
        """The exact value of `state` for the player to move (for a terminal state: player 0's return)."""
        value0 = self._value0(state)
        return -value0 + 0.0 if not state.is_terminal() and state.current_player() == 1 else value0  # no -0.0

    def action_values(self, state) -> dict:
        """{legal action: its exact value for the player to move}."""
        sign = 1.0 if state.current_player() == 0 else -1.0
        return {int(a): sign * self._value0(state.child(a)) + 0.0 for a in state.legal_actions()}  # no -0.0

    def choose(self, state, rng: np.random.Generator) -> int:
        values = self.action_values(state)
        best = max(values.values())
        optimal = [a for a, v in values.items() if v == best]
        return optimal[rng.integers(len(optimal))]


class MCTSPlayer:
    """Pure MCTS with random rollouts: OpenSpiel's `MCTSBot` with `RandomRolloutEvaluator` (and its MCTS-solver
    backups), built afresh for each move from a seed drawn from the rng, so its play is reproducible."""

    def __init__(self, game, num_simulations: int = 400, num_rollouts: int = 1, uct_c: float = 2.0):
        _pyspiel()
        from open_spiel.python.algorithms import mcts

        self._mcts = mcts
        self.game = _as_game(game)
        self.num_simulations = int(num_simulations)
        self.num_rollouts = int(num_rollouts)
        self.uct_c = float(uct_c)
        self.name = f"mcts{self.num_simulations}"

    def choose(self, state, rng: np.random.Generator) -> int:
        random_state = np.random.RandomState(int(rng.integers(2**31)))
        evaluator = self._mcts.RandomRolloutEvaluator(n_rollouts=self.num_rollouts, random_state=random_state)
        bot = self._mcts.MCTSBot(self.game, self.uct_c, self.num_simulations, evaluator,
                                 random_state=random_state)
        return int(bot.step(state.clone()))


def play_game(game, players, rng: np.random.Generator) -> np.ndarray:
    """Play one game from the initial state, `players[p]` moving for player p (chance nodes sampled with `rng`);
    returns the final returns per player."""
    game = _as_game(game)
    state = game.new_initial_state()
    while not state.is_terminal():
        if state.is_chance_node():
            actions, probs = zip(*state.chance_outcomes())
            state.apply_action(int(actions[rng.choice(len(actions), p=probs)]))
            continue
        mover = state.current_player()
        action = players[mover].choose(state, rng)
        legal = state.legal_actions()
        if action not in legal:
            raise UnirlError(f"player `{players[mover].name}` chose action {action}, which is not legal in "
                             f"`{_game_name(game)}` here (legal: {legal}).")
        state.apply_action(int(action))
    return np.asarray(state.returns(), dtype=np.float64)


def match(game, player, opponent, num_games: int, seed: int) -> dict:
    """Play `num_games` games of `player` against `opponent`, alternating seats (player is player 0 in even games,
    player 1 in odd ones: an odd number of games gives seat 0 one more), game k seeded with SeedSequence([seed, k]).

    Returns, from `player`'s view: `wins`, `draws`, `losses`, `games`, `win_rate` (wins / games), `score`
    ((wins + draws / 2) / games) and `per_seat` ({0: {wins, draws, losses}, 1: {...}}, by the seat `player` had).
    """
    game = _as_game(game)
    if num_games <= 0:
        raise UnirlError(f"a match needs at least one game, not num_games={num_games}.")
    per_seat = {seat: {"wins": 0, "draws": 0, "losses": 0} for seat in (0, 1)}
    for k in range(num_games):
        seat = k % 2
        players = (player, opponent) if seat == 0 else (opponent, player)
        rng = np.random.default_rng(np.random.SeedSequence([seed, k]))
        ret = play_game(game, players, rng)[seat]
        per_seat[seat]["wins" if ret > 0 else "losses" if ret < 0 else "draws"] += 1
    wins, draws, losses = (per_seat[0][key] + per_seat[1][key] for key in ("wins", "draws", "losses"))
    return {"wins": wins, "draws": draws, "losses": losses, "games": num_games, "win_rate": wins / num_games,
            "score": (wins + 0.5 * draws) / num_games, "per_seat": per_seat}
