"""PUCT search (AlphaZero: Silver et al. 2018) in NumPy over OpenSpiel game states, many games at once.

One tree per game. Each simulation descends every game's tree from its root by the PUCT rule

    a* = argmax_a  Q(s, a) + c(s) P(s, a) sqrt(max(N(s), 1)) / (1 + N(s, a)),
    c(s) = c_init + log((1 + N(s) + c_base) / c_base)

(Q(s, a) = W(s, a) / N(s, a) from the view of the player to move at s, 0 for an unvisited move; N(s) the visits
of s's moves; ties: the lowest action), until it leaves the tree. The new positions of all games are evaluated
in one batched call of the policy-value network (`evaluate(obs [B, D]) -> (logits [B, A], values [B])`, the
observation followed by the legal-move mask, logits of illegal moves already masked), expanded with the
network's priors, and their value (tanh of the value head, for the player to move there) is backed up: each
edge adds it from the view of the player who chose the edge (the sign flips between the two players of a
zero-sum game). A simulation that reaches the end of the game backs up the game's returns instead.

At a training game's root, Dirichlet(alpha) noise is mixed into the priors (weight `dirichlet_fraction`), drawn
from the game's own generator; nothing else in the search is random, and the network's rows do not depend on
the batch they share (the adapters' fixed 64-row blocks), so a game's search depends only on its position, its
generator and the weights: the same bits whichever games share the batch, on every backend and worker count.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class SearchConfig:
    """PUCT's settings (the AlphaZero paper's c_base and c_init; alpha 0.3 is its chess value, more suits games
    with fewer moves)."""

    num_simulations: int = 100
    c_init: float = 1.25
    c_base: float = 19652.0
    dirichlet_alpha: float = 0.3
    dirichlet_fraction: float = 0.25


class Node:
    """A position in a game's tree: its state (kept for expanding children), the player to move, its legal
    actions with their priors, visit counts N and value sums W (from the mover's view), and children."""

    __slots__ = ("state", "player", "actions", "prior", "N", "W", "children", "terminal", "returns")

    def __init__(self, state):
        self.state = state
        self.terminal = state.is_terminal()
        self.returns = np.asarray(state.returns(), np.float64) if self.terminal else None
        self.player = -1 if self.terminal else state.current_player()
        self.actions = np.zeros(0, np.int64) if self.terminal else np.asarray(state.legal_actions(), np.int64)
        self.prior = None  # set by expand()
        self.N = np.zeros(len(self.actions), np.int64)
        self.W = np.zeros(len(self.actions), np.float64)
        self.children: list = [None] * len(self.actions)

    @property
    def expanded(self) -> bool:
        return self.prior is not None

    def expand(self, logits: np.ndarray) -> None:
        """Priors: the softmax of the network's logits over the legal actions (float64)."""
        x = np.asarray(logits, np.float64)[self.actions]
        p = np.exp(x - x.max())
        self.prior = p / p.sum()


def encode(state, num_actions: int) -> np.ndarray:
    """The network's input for `state`: the observation tensor of the player to move, then the legal-move mask."""
    mask = np.zeros(num_actions, np.float32)
    mask[state.legal_actions()] = 1.0
    return np.concatenate([np.asarray(state.observation_tensor(state.current_player()), np.float32), mask])


def puct_scores(node: Node, c_init: float, c_base: float) -> np.ndarray:
    """PUCT's score of each of `node`'s legal actions (the rule in the module docstring)."""
    n = int(node.N.sum())
    c = c_init + math.log((1 + n + c_base) / c_base)
    q = np.where(node.N > 0, node.W / np.maximum(node.N, 1), 0.0)
    return q + c * node.prior * math.sqrt(max(n, 1)) / (1.0 + node.N)


def backup(path: list, returns: np.ndarray) -> None:
    """Add one visit and the value for each edge's chooser (`returns[player]`) along `path` [(node, index)]."""
    for node, i in path:
        node.N[i] += 1
        node.W[i] += returns[node.player]


def leaf_returns(player: int, value: float) -> np.ndarray:
    """The returns vector of a two-player zero-sum position worth `value` to `player`, the player to move."""
    r = np.empty(2, np.float64)
    r[player] = value
    r[1 - player] = -value
    return r


def evaluate_nodes(nodes: list, evaluate, num_actions: int) -> None:
    """Expand `nodes` (unexpanded, non-terminal) with one batched network call; returns their values (tanh, for
    the player to move at each)."""
    obs = np.stack([encode(n.state, num_actions) for n in nodes])
    logits, values = evaluate(obs)
    for node, row in zip(nodes, logits):
        node.expand(row)
    return np.tanh(np.asarray(values, np.float64))


def add_dirichlet(node: Node, rng: np.random.Generator, alpha: float, fraction: float) -> None:
    noise = rng.dirichlet(np.full(len(node.actions), alpha))
    node.prior = (1.0 - fraction) * node.prior + fraction * noise


def search(states: list, evaluate, num_actions: int, config: SearchConfig, rngs: list | None = None,
           roots: list | None = None) -> tuple[list, np.ndarray]:
    """Run `config.num_simulations` simulations from each of `states` (not terminal) together; returns (the root
    nodes, visit counts [N, num_actions]). `rngs`: one generator per game for the root noise (None: no noise, as in
    evaluation). `roots`: trees to continue (their states must be `states`)."""
    roots = roots or [Node(s.clone()) for s in states]
    fresh = [r for r in roots if not r.expanded]
    if fresh:
        evaluate_nodes(fresh, evaluate, num_actions)
    if rngs is not None:
        for root, rng in zip(roots, rngs):
            add_dirichlet(root, rng, config.dirichlet_alpha, config.dirichlet_fraction)
    for _ in range(config.num_simulations):
        leaves, paths = [], []
        for root in roots:
            path, node = [], root
            while True:
                i = int(np.argmax(puct_scores(node, config.c_init, config.c_base)))
                path.append((node, i))
                child = node.children[i]
                if child is None:
                    state = node.state.clone()
                    state.apply_action(int(node.actions[i]))
                    child = node.children[i] = Node(state)
                    if not child.terminal:
                        leaves.append(child)
                        paths.append(path)
                        break
                if child.terminal:
                    backup(path, child.returns)
                    break
                node = child
        if leaves:
            values = evaluate_nodes(leaves, evaluate, num_actions)
            for leaf, path, v in zip(leaves, paths, values):
                backup(path, leaf_returns(leaf.player, float(v)))
    visits = np.zeros((len(roots), num_actions), np.int64)
    for k, root in enumerate(roots):
        visits[k, root.actions] = root.N
    return roots, visits


def choose_move(visits: np.ndarray, u: float, sample: bool) -> int:
    """A move from a root's visit counts: drawn in proportion to them with the uniform `u` (temperature 1, exact
    integer arithmetic), or the most visited (ties: the lowest action)."""
    if not sample:
        return int(np.argmax(visits))
    cdf = np.cumsum(visits)
    return int(min(np.searchsorted(cdf, u * cdf[-1], side="right"), len(visits) - 1))
