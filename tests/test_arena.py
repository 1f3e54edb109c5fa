"""The game arena (unirl.arena): minimax is exact on hand-checked tic-tac-toe positions, the reference players rank
as they should, matches alternate seats and are reproducible from their seed, and user errors read clearly."""
from __future__ import annotations

import sys

import numpy as np
import pytest

pytest.importorskip("pyspiel")

from unirl.arena import MCTSPlayer, MinimaxPlayer, RandomPlayer, load_game, match, play_game  # noqa: E402
from unirl.errors import UnirlError  # noqa: E402

def rngs(n=20):
    """Fresh generators, so no test depends on what another one drew."""
    return [np.random.default_rng(s) for s in range(n)]


@pytest.fixture(scope="module")
def ttt():
    return load_game("tic_tac_toe")


@pytest.fixture(scope="module")
def minimax(ttt):
    return MinimaxPlayer(ttt)


def position(game, actions):
    """The tic-tac-toe state after `actions` (cells 0..8 row-major, x = player 0 first)."""
    state = game.new_initial_state()
    for a in actions:
        state.apply_action(a)
    return state


def test_empty_board_is_a_draw(ttt, minimax):
    state = ttt.new_initial_state()
    assert minimax.value(state) == 0.0
    assert str(state) == str(ttt.new_initial_state())  # looking ahead leaves the state alone


def test_immediate_win_is_worth_one_and_chosen(ttt, minimax):
    # x: 0 4 6, o: 1 5 8; x to move wins at 3 (0-3-6) or 2 (2-4-6); 7 loses (o then wins at 2, 2-5-8).
    state = position(ttt, [0, 1, 4, 5, 6, 8])
    assert state.current_player() == 0
    assert minimax.value(state) == 1.0
    assert minimax.action_values(state) == {2: 1.0, 3: 1.0, 7: -1.0}
    chosen = {minimax.choose(state, rng) for rng in rngs()}
    assert chosen == {2, 3}  # only winning moves, and both of them (choose is random among optimal moves)


def test_facing_a_fork_is_lost(ttt, minimax):
    # x: 0 2 4 threatens 6 (2-4-6) and 8 (0-4-8); o (1, 7) to move has no win of its own.
    state = position(ttt, [0, 1, 2, 7, 4])
    assert state.current_player() == 1
    assert minimax.value(state) == -1.0
    assert set(minimax.action_values(state).values()) == {-1.0}


def test_the_only_non_losing_move_is_the_block(ttt, minimax):
    # x: 0 1 threatens 2; o (4) must block at 2, every other move loses.
    state = position(ttt, [0, 4, 1])
    values = minimax.action_values(state)
    assert values.pop(2) == 0.0
    assert set(values.values()) == {-1.0}
    assert {minimax.choose(state, rng) for rng in rngs()} == {2}


def test_terminal_value_is_the_return(ttt, minimax):
    state = position(ttt, [0, 3, 1, 4, 2])  # x wins on the top row
    assert state.is_terminal()
    assert minimax.value(state) == 1.0


def test_minimax_against_itself_always_draws(ttt, minimax):
    result = match(ttt, minimax, MinimaxPlayer(ttt), num_games=20, seed=0)
    assert result["draws"] == 20


def test_minimax_beats_random(ttt, minimax):
    result = match(ttt, minimax, RandomPlayer(), num_games=20, seed=0)
    assert result["losses"] == 0
    assert result["wins"] > 0
    assert result["per_seat"][1]["wins"] > 0  # it wins from the second seat too


def test_mcts_beats_random(ttt):
    result = match(ttt, MCTSPlayer(ttt, num_simulations=400), RandomPlayer(), num_games=10, seed=0)
    assert result["losses"] == 0
    assert result["wins"] > 0


def test_weak_mcts_never_beats_minimax(ttt, minimax):
    result = match(ttt, minimax, MCTSPlayer(ttt, num_simulations=50), num_games=10, seed=0)
    assert result["losses"] == 0


class Recorder:
    """Wraps a player and writes down every move it makes."""

    def __init__(self, player):
        self.player, self.name, self.moves = player, player.name, []

    def choose(self, state, rng):
        action = self.player.choose(state, rng)
        self.moves.append(action)
        return action


def test_match_is_reproducible_from_its_seed(ttt):
    def run(seed):
        mcts, rand = Recorder(MCTSPlayer(ttt, num_simulations=20)), Recorder(RandomPlayer())
        return match(ttt, mcts, rand, num_games=6, seed=seed), mcts.moves, rand.moves

    first = run(3)
    assert run(3) == first
    assert run(4)[1:] != first[1:]  # another seed plays other games


def test_seats_alternate(ttt):
    result = match(ttt, RandomPlayer(), RandomPlayer(), num_games=12, seed=1)
    assert result["games"] == 12
    for seat in (0, 1):
        assert sum(result["per_seat"][seat].values()) == 6
    assert result["wins"] + result["draws"] + result["losses"] == 12
    assert result["score"] == pytest.approx((result["wins"] + 0.5 * result["draws"]) / 12)
    assert result["win_rate"] == result["wins"] / 12


def test_seat_decides_who_moves_first(ttt):
    movers = []

    class FirstMoveSpy(RandomPlayer):
        def choose(self, state, rng):
            if state.move_number() == 0:
                movers.append(self.name)
            return super().choose(state, rng)

    a, b = FirstMoveSpy(), FirstMoveSpy()
    a.name, b.name = "a", "b"
    match(ttt, a, b, num_games=4, seed=0)
    assert movers == ["a", "b", "a", "b"]


def test_play_game_returns_zero_sum_returns(ttt, minimax):
    returns = play_game(ttt, (RandomPlayer(), minimax), np.random.default_rng(0))
    assert returns.shape == (2,) and returns.sum() == 0.0 and returns[1] >= 0.0


def test_unknown_game_suggests_the_nearest_name():
    with pytest.raises(UnirlError, match="(?i)did you mean `tic_tac_toe`"):
        load_game("tic_tac_to")


def test_missing_pyspiel_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyspiel", None)  # makes `import pyspiel` raise ImportError
    with pytest.raises(UnirlError, match=r"unirl\[games\]"):
        load_game("tic_tac_toe")


def test_minimax_refuses_large_games():
    with pytest.raises(UnirlError, match="connect_four") as info:
        MinimaxPlayer(load_game("connect_four"))
    assert "small games like tic_tac_toe" in str(info.value)


def test_minimax_refuses_games_with_chance_or_hidden_information():
    with pytest.raises(UnirlError, match="kuhn_poker"):
        MinimaxPlayer(load_game("kuhn_poker"))


def test_an_odd_match_gives_seat_0_the_extra_game_and_no_games_is_refused(ttt):
    result = match(ttt, RandomPlayer(), RandomPlayer(), num_games=5, seed=0)
    assert [sum(result["per_seat"][seat].values()) for seat in (0, 1)] == [3, 2]
    with pytest.raises(UnirlError, match="at least one game"):
        match(ttt, RandomPlayer(), RandomPlayer(), num_games=0, seed=0)


def test_an_illegal_move_is_reported(ttt):
    class Cheater:
        name = "cheater"

        def choose(self, state, rng):
            return 0  # cell 0, taken after the first move

    with pytest.raises(UnirlError, match="cheater"):
        play_game(ttt, (Cheater(), Cheater()), np.random.default_rng(0))
