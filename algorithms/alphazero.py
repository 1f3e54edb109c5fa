"""AlphaZero (Silver et al. 2018, "A general reinforcement learning algorithm that masters chess, shogi, and Go
through self-play") for two-player zero-sum OpenSpiel games, on the "self-play" execution pattern.

- A policy-value network f(s) = (p, v): the observation of the player to move (and the legal-move mask, which
  masks the policy's logits) -> move priors and tanh(v), the expected outcome for the player to move.
- Self-play (unirl.execution.self_play, unirl.mcts): each move of each game is chosen by a PUCT search of
  `num_simulations` simulations guided by f, with Dirichlet noise mixed into the root's priors; the first
  `temperature_moves` moves are drawn in proportion to the root's visit counts, later ones are the most visited.
  The games of a worker search together (one batched network call per simulation).
- Each position becomes a row (s, pi, z): pi the root's visit distribution, z the game's final return for the
  player who moved there. Rows enter a replay buffer; the learner takes `sample_reuse` x (new rows) /
  `replay_batch_size` gradient steps on uniform minibatches of the loss

      l = -pi . log p  +  value_loss_coeff (z - v)^2  +  l2_coeff ||weights||^2.

- Evaluation (`evaluate`, `unirl evaluate`): greedy search (no noise, the most visited move) against a fixed
  opponent of unirl.arena, half the games in each seat.

Every draw of game g (its roots' noise, its move choices) comes from its own stream keyed by (run seed, g), the
minibatches from the learner's stream: every backend and worker count gives the same bits.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from unirl import seeding
from unirl.algorithm import Algorithm
from unirl.config import AsyncConfig
from unirl.conformance_spec import REPLAYABLE, ConformanceSpec
from unirl.errors import UnirlError
from unirl.execution import loops
from unirl.execution.self_play import OBS, PI, Z, SelfPlaySpec, network_evaluator
from unirl.mcts import SearchConfig, choose_move, gumbel_result, search
from unirl.models import build_module
from unirl.optim import default_optimizer
from unirl.policy import PolicySpec

#: The opponents `evaluation_opponent` names (unirl.arena).
OPPONENTS = ("random", "minimax", "mcts")


@dataclass
class AlphaZeroConfig(AsyncConfig):
    """AlphaZero's options: the paper's PUCT constants and root noise weight; a small MLP and search budget for
    games of tic-tac-toe and Connect Four size on a CPU."""

    #: The OpenSpiel game (two players, zero-sum, perfect information): "tic_tac_toe", "connect_four"; its
    #: parameters, if any, in env_config ({"rows": 5}).
    env: str = "tic_tac_toe"
    #: "sync": each iteration's games played with the same weights, then the learner (bit-identical); "async":
    #: actors play on with the weights of their last request while the learner steps after each chunk of games
    #: (replayable from the recorded `arrival_schedule`).
    self_play_mode: str = "sync"
    #: Self-play games per iteration (split over the workers).
    games_per_iteration: int = 32
    #: Games a worker plays at once, searching together (0: games_per_iteration / num_workers); free-running,
    #: the games of one request.
    games_per_chunk: int = 0
    #: PUCT simulations per move in self-play.
    num_simulations: int = 50
    #: PUCT exploration: c(s) = c_init + log((1 + N(s) + c_base) / c_base).
    c_init: float = 1.25
    #: PUCT exploration's growth with the visits (see c_init).
    c_base: float = 19652.0
    #: Dirichlet noise at the root: its concentration.
    dirichlet_alpha: float = 1.0
    #: Dirichlet noise at the root: its weight in the priors.
    dirichlet_fraction: float = 0.25
    #: Moves of each game drawn in proportion to the root's visit counts (later: the most visited).
    temperature_moves: int = 10
    #: Gumbel root selection (Danihelka et al. 2022) instead of PUCT with Dirichlet noise: the root samples
    #: `gumbel_actions` moves by Gumbel-top-k and spends the simulations on them by sequential halving; the move
    #: is the survivor and the policy target the improved policy (for small budgets: 8-16 simulations).
    gumbel: bool = False
    #: Gumbel: moves considered at the root.
    gumbel_actions: int = 16
    #: Gumbel: sigma(q) = (c_visit + max visits) * c_scale * q, q the completed Q-values rescaled to [0, 1].
    c_visit: float = 50.0
    #: Gumbel: see c_visit.
    c_scale: float = 0.1
    #: Rows (positions) the replay buffer keeps.
    replay_buffer_capacity: int = 65_536
    #: Rows in each of the learner's minibatches.
    replay_batch_size: int = 256
    #: Times each position is replayed on average: gradient steps = sample_reuse x rows / replay_batch_size.
    sample_reuse: float = 4.0
    lr: float = 1e-3
    grad_clip: float = 0.0
    #: Weight of the L2 penalty on the network's weights.
    l2_coeff: float = 1e-4
    #: Weight of the value loss.
    value_loss_coeff: float = 1.0
    #: The policy-value network (one MLP tower shared by the two heads).
    model: dict = field(default_factory=lambda: {"hidden_sizes": [128, 128], "activation": "relu",
                                                 "vf_share_layers": True})
    #: Self-play's network pass: "framework" (the adapter, batched) or "numpy" (the NumPy ops).
    worker_forward: str = "framework"
    #: evaluate()'s opponent: "random", "minimax" (exact; small games only) or "mcts" (random rollouts).
    evaluation_opponent: str = "random"
    #: Simulations per move of the greedy search evaluate() plays with (0: num_simulations).
    evaluation_simulations: int = 0
    #: The MCTS opponent's simulations per move (one random rollout each).
    evaluation_mcts_simulations: int = 400

    @classmethod
    def env_loads_no_code(cls, env) -> bool:
        """An OpenSpiel game name loads a game compiled into pyspiel, nothing else."""
        return isinstance(env, str) and ":" not in env

    def check_sampling(self) -> None:
        """Self-play samples whole games (games_per_iteration), whatever the number of workers."""

    @property
    def game(self) -> str:
        """The game's OpenSpiel name, with env_config as its parameters: "connect_four(rows=5)"."""
        if not self.env_config:
            return self.env
        params = ",".join(f"{k}={v}" for k, v in sorted(self.env_config.items()))
        return f"{self.env}({params})"

    def check_env(self) -> None:
        if ":" in self.env or self.env.startswith("pettingzoo") or "_v" in self.env:
            raise UnirlError(f"AlphaZero searches by cloning game states, which PettingZoo envs (`{self.env}`) do not "
                             "expose; use the OpenSpiel game of the same name (e.g. `connect_four`, `tic_tac_toe`).")
        from unirl.arena import is_two_player_zero_sum, load_game

        if not is_two_player_zero_sum(load_game(self.game)):
            raise UnirlError(f"AlphaZero plays two-player zero-sum deterministic games of perfect information with "
                             f"alternating moves; OpenSpiel's `{self.env}` is not one.")

    def validate(self) -> None:
        super().validate()
        for key in ("games_per_iteration", "num_simulations", "replay_buffer_capacity", "replay_batch_size",
                    "gumbel_actions"):
            if int(getattr(self, key)) < 1:
                raise UnirlError(f"config key `{key}` must be at least 1, got {getattr(self, key)}.")
        if self.games_per_chunk < 0 or self.temperature_moves < 0 or self.evaluation_simulations < 0:
            raise UnirlError("config keys `games_per_chunk`, `temperature_moves` and `evaluation_simulations` must "
                             "not be negative.")
        if not 0.0 <= self.dirichlet_fraction <= 1.0 or self.dirichlet_alpha <= 0:
            raise UnirlError("config key `dirichlet_fraction` must lie in [0, 1] and `dirichlet_alpha` be positive.")
        if self.sample_reuse <= 0:
            raise UnirlError(f"config key `sample_reuse` must be positive, got {self.sample_reuse}.")
        if self.self_play_mode not in ("sync", "async"):
            raise UnirlError(f"config key `self_play_mode` must be \"sync\" or \"async\", got {self.self_play_mode!r}.")
        if self.arrival_schedule is not None and self.self_play_mode != "async":
            raise UnirlError("config key `arrival_schedule` replays a free-running run: set `self_play_mode` to "
                             "\"async\" as well.")
        if self.worker_forward not in ("framework", "numpy"):
            raise UnirlError(f"config key `worker_forward` must be \"framework\" or \"numpy\", got "
                             f"{self.worker_forward!r}.")
        if self.evaluation_opponent not in OPPONENTS:
            from unirl.errors import did_you_mean

            raise UnirlError(f"config key `evaluation_opponent` must be one of {list(OPPONENTS)}, got "
                             f"{self.evaluation_opponent!r}." + did_you_mean(self.evaluation_opponent, OPPONENTS))


def alphazero_loss(ops, module, params, batch, hp):
    """Cross-entropy of the priors against the search's visit distribution, squared error of the value against the
    outcome, and L2 on the weights."""
    out = module.forward_train(ops, params, batch[OBS])
    policy_loss = -ops.mean(ops.sum(batch[PI] * ops.log_softmax(out["dist_inputs"]), axis=-1))
    value_loss = ops.mean(ops.square(ops.tanh(out["values"]) - batch[Z]))
    l2 = sum(ops.sum(ops.square(w)) for name, w in sorted(params.items()) if name.endswith("/w"))
    loss = policy_loss + hp["value_loss_coeff"] * value_loss + hp["l2_coeff"] * l2
    return loss, {"policy_loss": policy_loss, "value_loss": value_loss, "l2": l2}


class AlphaZeroPlayer:
    """An arena player (unirl.arena) that moves by greedy PUCT search with a policy's network."""

    def __init__(self, policy, game, settings: SearchConfig):
        self.name = "alphazero"
        self.evaluate = network_evaluator(policy)
        self.num_actions = game.num_distinct_actions()
        self.settings = settings

    def choose(self, state, rng) -> int:
        roots, visits = search([state], self.evaluate, self.num_actions, self.settings)
        if self.settings.gumbel:
            return gumbel_result(roots[0], self.num_actions, self.settings)[1]
        return choose_move(visits[0], 0.0, sample=False)


#: A small tic-tac-toe run for the conformance suite's levels 1-4.
TIC_TAC_TOE_RUN = {"env": "tic_tac_toe", "total_envs": 12, "games_per_iteration": 12, "num_simulations": 8,
                   "replay_batch_size": 32, "model": {"hidden_sizes": [32, 32], "vf_share_layers": True}}


class AlphaZero(Algorithm):
    name = "AlphaZero"
    config_class = AlphaZeroConfig
    loss = staticmethod(alphazero_loss)
    execution = loops.SelfPlay()
    supports_normalization = False
    inert_config_keys = dict(Algorithm.inert_config_keys, **{
        key: "self-play plays whole games (games_per_iteration), not env steps of Gymnasium envs"
        for key in ("num_envs_per_worker", "train_batch_size", "gamma", "normalize_clip", "lr_decay_timesteps",
                    "lr_final", "lr_schedule")},
        evaluation_mcts_simulations="read when evaluation_opponent is \"mcts\"")
    conformance = ConformanceSpec(
        run_config=TIC_TAC_TOE_RUN,
        curve_config=TIC_TAC_TOE_RUN,
        # the tic-tac-toe target: a mean outcome of 0 against exact minimax (which cannot lose) is no lost game
        learning={"config": {"env": "tic_tac_toe", "evaluation_opponent": "minimax"}, "score": 0.0,
                  "budget": 20_000, "eval_episodes": 20, "eval_every": 2_000},
        quick_iterations=2,
        notes="self-play by PUCT search; level 5 plays greedy search against exact minimax: no game lost",
        variants={"async": ConformanceSpec(run_config=dict(TIC_TAC_TOE_RUN, self_play_mode="async", games_per_chunk=2),
                                           reproducibility=REPLAYABLE, levels=(1, 2, 3), quick_iterations=2,
                                           notes="free-running self-play, replayed from its arrival schedule")},
    )

    @classmethod
    def policy_spec(cls, config: AlphaZeroConfig, env_spaces=None, seed=None) -> PolicySpec:
        """The policy-value network over the game's observation tensor and legal-move mask."""
        import gymnasium as gym

        from unirl.arena import load_game

        game = load_game(config.game)
        n = game.num_distinct_actions()
        obs_size = int(np.prod(game.observation_tensor_shape()))
        obs_space = gym.spaces.Dict({"observation": gym.spaces.Box(-np.inf, np.inf, (obs_size,), np.float32),
                                     "action_mask": gym.spaces.Box(0.0, 1.0, (n,), np.float32)})
        module = build_module("actor_critic", obs_space, gym.spaces.Discrete(n), config.model_config())
        return PolicySpec(config.framework, module, config.seed if seed is None else seed, config.deterministic,
                          config.num_threads)

    @classmethod
    def optimizer(cls, config: AlphaZeroConfig):
        return default_optimizer(config.grad_clip)

    def setup(self) -> None:
        from unirl.arena import load_game

        self.game = load_game(self.config.game)
        super().setup()

    def self_play_spec(self) -> SelfPlaySpec:
        c = self.config
        return SelfPlaySpec(self.acting_policy, c.game, c.seed, forward=c.worker_forward)

    def search_config(self, simulations: int | None = None) -> SearchConfig:
        c = self.config
        return SearchConfig(num_simulations=simulations or c.num_simulations, c_init=c.c_init, c_base=c.c_base,
                            dirichlet_alpha=c.dirichlet_alpha, dirichlet_fraction=c.dirichlet_fraction,
                            gumbel=c.gumbel, gumbel_actions=c.gumbel_actions, c_visit=c.c_visit, c_scale=c.c_scale)

    def search_settings(self) -> dict:
        """What the self-play actors search with this round (broadcast with the weights)."""
        return dict(vars(self.search_config()), temperature_moves=self.config.temperature_moves)

    def hyperparameters(self) -> dict[str, float]:
        c = self.config
        return {"lr": self.current_lr(), "l2_coeff": c.l2_coeff, "value_loss_coeff": c.value_loss_coeff}

    # -- acting and evaluation ------------------------------------------------------------------
    def player(self, simulations: int | None = None) -> AlphaZeroPlayer:
        """This network as an arena player: greedy search with `simulations` (default evaluation_simulations)."""
        c = self.config
        return AlphaZeroPlayer(self.policy, self.game, self.search_config(simulations or c.evaluation_simulations))

    def opponent(self, name: str | None = None):
        from unirl import arena

        name = name or self.config.evaluation_opponent
        if name == "random":
            return arena.RandomPlayer()
        if name == "minimax":
            return arena.MinimaxPlayer(self.game)
        if name == "mcts":
            return arena.MCTSPlayer(self.game, num_simulations=self.config.evaluation_mcts_simulations)
        raise UnirlError(f"unknown opponent `{name}`; AlphaZero evaluates against {list(OPPONENTS)}.")

    def evaluate(self, num_episodes: int | None = None, opponent: str | None = None) -> dict:
        """Greedy search against `opponent` (default evaluation_opponent) over num_episodes games (default
        evaluation_num_episodes), seats alternating game by game; the mean return is the mean outcome."""
        from unirl import arena

        n = self.evaluation_episodes(num_episodes)
        name = opponent or self.config.evaluation_opponent
        seed = int(seeding.seed_sequence(self.config.seed, seeding.ARENA).generate_state(1)[0])
        result = arena.match(self.game, self.player(), self.opponent(name), n, seed)
        returns = [1.0] * result["wins"] + [0.0] * result["draws"] + [-1.0] * result["losses"]
        return {"evaluation/episode_return_mean": (result["wins"] - result["losses"]) / n,
                "evaluation/episodes": n, "evaluation/episode_returns": returns,
                "evaluation/opponent": name, "evaluation/wins": result["wins"], "evaluation/draws": result["draws"],
                "evaluation/losses": result["losses"], "evaluation/per_seat": result["per_seat"],
                "weights_digest": self.weights_digest()}

    def compute_actions(self, obs: np.ndarray, explore: bool = False, seed: int = 0) -> np.ndarray:
        raise UnirlError("AlphaZero acts by searching from a game state, not from an observation: use "
                         "`algo.player().choose(state, rng)` with an OpenSpiel state (unirl.arena).")
