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
from the game's own generator; or, with `gumbel` (Danihelka et al. 2022), the root samples `gumbel_actions` moves
without replacement by Gumbel-top-k (the Gumbel noise from the game's generator; none in evaluation), spends the
simulations on them by sequential halving, and the move is the survivor, the policy target the improved policy
softmax(logits + sigma(completed Q)); interior nodes then pick the move whose visit share most lags that policy; nothing else in the search is random, and the network's rows do not depend on
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
    #: Gumbel root selection (Danihelka et al. 2022) instead of PUCT with Dirichlet noise (see `gumbel_search`).
    gumbel: bool = False
    #: Gumbel: actions sampled at the root (without replacement) for sequential halving.
    gumbel_actions: int = 16
    #: Gumbel: sigma(q) = (c_visit + max_b N(b)) * c_scale * q, q the completed Q-values rescaled to [0, 1].
    c_visit: float = 50.0
    c_scale: float = 0.1


class Node:
    """A position in a game's tree: its state (kept for expanding children), the player to move, its legal
    actions with their priors, visit counts N and value sums W (from the mover's view), and children."""

    __slots__ = ("state", "player", "actions", "prior", "logits", "value", "N", "W", "children", "terminal", "returns",
                 "gumbel", "considered")

    def __init__(self, state):
        self.state = state
        self.terminal = state.is_terminal()
        self.returns = np.asarray(state.returns(), np.float64) if self.terminal else None
        self.player = -1 if self.terminal else state.current_player()
        self.actions = np.zeros(0, np.int64) if self.terminal else np.asarray(state.legal_actions(), np.int64)
        self.prior = None  # set by expand()
        self.logits = None  # the network's logits over the legal actions, max 0 (expand)
        self.value = 0.0  # the network's value for the player to move (evaluate_nodes)
        self.gumbel = None  # Gumbel root selection: each legal action's g + logits, and the actions considered
        self.considered = None
        self.N = np.zeros(len(self.actions), np.int64)
        self.W = np.zeros(len(self.actions), np.float64)
        self.children: list = [None] * len(self.actions)

    @property
    def expanded(self) -> bool:
        return self.prior is not None

    def expand(self, logits: np.ndarray) -> None:
        """Priors: the softmax of the network's logits over the legal actions (float64)."""
        x = np.asarray(logits, np.float64)[self.actions]
        self.logits = x - x.max()
        p = np.exp(self.logits)
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
    values = np.tanh(np.asarray(values, np.float64))
    for node, row, v in zip(nodes, logits, values):
        node.expand(row)
        node.value = float(v)
    return values


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
    if config.gumbel:
        visits_due = considered_visits(config.gumbel_actions, config.num_simulations)
        for k, root in enumerate(roots):
            g = rngs[k].gumbel(size=len(root.actions)) if rngs is not None else np.zeros(len(root.actions))
            root.gumbel = g + root.logits
            m = min(config.gumbel_actions, len(root.actions))
            root.considered = np.sort(np.argsort(-root.gumbel, kind="stable")[:m])
    elif rngs is not None:
        for root, rng in zip(roots, rngs):
            add_dirichlet(root, rng, config.dirichlet_alpha, config.dirichlet_fraction)
    for sim in range(config.num_simulations):
        leaves, paths = [], []
        for root in roots:
            path, node = [], root
            while True:
                if not config.gumbel:
                    i = int(np.argmax(puct_scores(node, config.c_init, config.c_base)))
                elif node is root:
                    i = gumbel_root_action(root, visits_due[sim], config)
                else:
                    i = gumbel_interior_action(node, config)
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


# -- Gumbel root selection (Danihelka et al. 2022, "Policy improvement by planning with Gumbel") ---------------
def considered_visits(num_considered: int, num_simulations: int) -> list[int]:
    """Sequential halving as a schedule: for each simulation, the visit count the root action it explores must
    have (the considered actions are visited in turn, phase by phase, the number considered halving each phase;
    the sequence of mctx's `get_sequence_of_considered_visits`)."""
    if num_considered <= 1:
        return list(range(num_simulations))
    log2max = int(math.ceil(math.log2(num_considered)))
    sequence, visits, considered = [], [0] * num_considered, num_considered
    while len(sequence) < num_simulations:
        extra = max(1, int(num_simulations / (log2max * considered)))
        for _ in range(extra):
            sequence.extend(visits[:considered])
            for i in range(considered):
                visits[i] += 1
        considered = max(2, considered // 2)
    return sequence[:num_simulations]


def completed_q(node: Node, config: SearchConfig) -> np.ndarray:
    """sigma(completed Q) of a node's legal actions: Q(s, a) for visited actions, the node's mixed value estimate
    (its network value and the prior-weighted mean Q of the visited actions) for the others; rescaled to [0, 1]
    over the node's actions, then scaled by (c_visit + max_b N(b)) * c_scale."""
    visited = node.N > 0
    q = node.W / np.maximum(node.N, 1)
    total = int(node.N.sum())
    if visited.any():
        p = node.prior[visited]
        weighted = float(np.sum(p * q[visited]) / max(p.sum(), 1e-12))
        mixed = (node.value + total * weighted) / (total + 1)
    else:
        mixed = node.value
    qc = np.where(visited, q, mixed)
    lo, hi = qc.min(), qc.max()
    qc = (qc - lo) / max(hi - lo, 1e-8)
    return (config.c_visit + node.N.max()) * config.c_scale * qc


def gumbel_root_action(root: Node, visits_due: int, config: SearchConfig) -> int:
    """Among the considered actions with `visits_due` visits, the highest g + logits + sigma(completed Q)."""
    score = root.gumbel + completed_q(root, config)
    allowed = np.full(len(root.actions), False)
    allowed[root.considered] = True
    allowed &= root.N == visits_due
    if not allowed.any():  # every considered action has moved past the schedule's count: the least visited
        allowed[root.considered] = root.N[root.considered] == root.N[root.considered].min()
    return int(np.argmax(np.where(allowed, score, -np.inf)))


def gumbel_interior_action(node: Node, config: SearchConfig) -> int:
    """The action whose visit share most lags the improved policy softmax(logits + sigma(completed Q))."""
    x = node.logits + completed_q(node, config)
    p = np.exp(x - x.max())
    p /= p.sum()
    return int(np.argmax(p - node.N / (1.0 + node.N.sum())))


def gumbel_result(root: Node, num_actions: int, config: SearchConfig) -> tuple[np.ndarray, int]:
    """(the policy target softmax(logits + sigma(completed Q)) over all actions, the move: among the most visited
    considered actions, the highest g + logits + sigma(completed Q))."""
    sigma = completed_q(root, config)
    x = root.logits + sigma
    p = np.exp(x - x.max())
    target = np.zeros(num_actions, np.float64)
    target[root.actions] = p / p.sum()
    considered = root.considered
    most = root.N[considered].max()
    score = np.full(len(root.actions), -np.inf)
    top = considered[root.N[considered] == most]
    score[top] = (root.gumbel + sigma)[top]
    return target, int(root.actions[int(np.argmax(score))])
