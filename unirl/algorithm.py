"""Algorithm: builds policy, backend and workers from a config; train() runs one iteration; save/restore/act."""
from __future__ import annotations

import collections
import os
import time

import numpy as np

from unirl import seeding
from unirl.checkpoint import load_checkpoint, save_checkpoint
from unirl.config import AlgorithmConfig, check_batch_memory
from unirl.env import spaces
from unirl.errors import UnirlError
from unirl.evaluation import evaluate_policy
from unirl.models import build_module
from unirl.optim import default_optimizer
from unirl.policy import Policy, PolicySpec


class Algorithm:
    """Base class. An algorithm sets `name`, `config_class`, `module_kind`, `loss` (and
    `param_sets` if it keeps more than `params`) and declares its `execution` pattern
    (unirl.execution.loops), which runs the driver loop and calls the algorithm's hooks:
    `hyperparameters`, `exploration`, `postprocess`, `learn`, `after_update`, `after_samples`.
    An algorithm with a loop of its own overrides `setup` and `training_step` instead.

    Usage::

        algo = unirl.build("PPO", {"env": "CartPole-v1", "num_workers": 2})
        for _ in range(10):
            result = algo.train()
        path = algo.save("ckpt")
        actions = algo.compute_actions(obs)
        algo.stop()
    """

    name = "base"
    config_class = AlgorithmConfig
    #: The module the algorithm needs: "actor_critic", "q" or "policy" (see unirl.models).
    module_kind = "actor_critic"
    #: loss(ops, module, params, batch, hp, **other_param_sets) -> (loss, stats); None: no gradient learning.
    loss = None
    #: Named parameter sets the learner keeps (the optimizer trains `params`).
    param_sets = ("params",)
    #: Several losses instead of one `loss`: unirl.policy.Learner triples (loss, the part of `params` it trains,
    #: its optimizer; None: the algorithm's `optimizer`), run in order in one compiled step (SAC, TD3).
    learners = ()
    #: What the conformance suite runs for this algorithm (unirl.conformance.spec.ConformanceSpec).
    conformance = None
    #: The execution pattern (a declaration from unirl.execution.loops); bound to this algorithm in setup().
    execution = None
    #: Config keys a run of this algorithm may leave unread, and why (the conformance suite's "config keys" check).
    inert_config_keys = {"multi_agent": "read by multi-agent runs only (a PettingZoo env, unirl.multi_agent); a "
                                        "single-agent config with it set is refused when validated"}
    #: The learner sees every sampled batch, so config keys normalize_observations / normalize_rewards
    #: can keep their statistics (False where workers learn from batches the driver never sees).
    supports_normalization = True
    #: Learns with a recurrent model (model.lstm_cell_size): its rows come from unirl.postprocessing.actor_critic_rows
    #: and its loss reads unirl.models.train_outputs.
    supports_recurrent = False

    def __new__(cls, config=None, *args, **overrides):
        # A multi-agent config (a PettingZoo env) builds the same algorithm with one learner per policy
        # (unirl.multi_agent.algorithm): the class is this one, extended, so the algorithm's file does not change.
        from unirl.multi_agent.algorithm import MultiAgentAlgorithm, multi_agent_class, wants_multi_agent

        if not issubclass(cls, MultiAgentAlgorithm) and wants_multi_agent(config, overrides):
            cls = multi_agent_class(cls)
        return object.__new__(cls)

    def __init__(self, config: AlgorithmConfig | dict | None = None, callbacks=None, **overrides):
        self.config = self.build_config(config, overrides)
        from unirl.callbacks import make_callbacks, overrides_episode_end

        #: User hooks run on the driver (unirl.callbacks.Callbacks): results, episodes, checkpoints.
        self.callbacks = make_callbacks(callbacks)
        self._episode_callbacks = overrides_episode_end(self.callbacks)
        from unirl.backends import get_backend

        self.init_learner(self.config, self.policy_spec(self.config))
        self.backend = get_backend(self.config.backend, **self.config.backend_options)
        from unirl.execution.recovery import Recovery

        # Worker recovery settings and counters, read by every execution pattern on this backend.
        self.backend.recovery = Recovery.from_config(self.config, self.backend)
        self.execution = None
        try:
            self.setup()
        except BaseException:
            self.backend.shutdown()
            raise

    def build_config(self, config, overrides: dict) -> AlgorithmConfig:
        """The typed config from a dict (or config object) and keyword overrides, validated."""
        if isinstance(config, AlgorithmConfig):
            config = config.to_dict()
        config = self.config_class.from_dict(config, **overrides)
        if not self.supports_normalization and (getattr(config, "normalize_observations", False)
                                                or getattr(config, "normalize_rewards", False)):
            raise UnirlError(f"{self.name} does not support normalize_observations or normalize_rewards: its workers "
                             "learn from batches the driver never sees, so the statistics could not be kept.")
        return config

    def init_learner(self, config: AlgorithmConfig, acting_policy: PolicySpec) -> None:
        """The learner's side of the algorithm for `config`: its policy (from the acting policy's spec), normalisers,
        generator and counters (a multi-agent run keeps one such learner per policy)."""
        self.config = config
        #: The acting policy as plain data: what workers build theirs from.
        self.acting_policy = acting_policy
        self.policy = self.build_policy(config, for_learning=True, spec=acting_policy)
        from unirl.normalization import Normalizers

        #: Observation and reward statistics (config keys normalize_*), kept here on the learner.
        self.normalizers = Normalizers(config, self.policy)
        # PCG64: its state is plain integers, so it round-trips through the checkpoint's JSON.
        self.learner_rng = np.random.Generator(np.random.PCG64(seeding.seed_sequence(config.seed, seeding.LEARNER)))
        self.init_counters(config)

    def init_counters(self, config: AlgorithmConfig) -> None:
        """The run's counters at zero: iterations, env steps, episodes, time, recent returns and lengths."""
        self.iteration = 0
        #: The largest |reward| sampled so far (after reward normalisation): the scale the value guard checks against.
        self.max_abs_reward = 0.0
        self.timesteps_total = 0
        self.episodes_total = 0
        self.time_total_s = 0.0
        self.recent_returns = collections.deque(maxlen=config.metrics_num_episodes_for_smoothing)
        self.recent_lengths = collections.deque(maxlen=config.metrics_num_episodes_for_smoothing)
        self._episodes_this_iter = 0
        self._returns_this_iter = np.zeros(0)

    def counters_state(self) -> dict:
        """The run's counters as checkpoint entries (JSON)."""
        return {"iteration": self.iteration, "timesteps_total": self.timesteps_total,
                "episodes_total": self.episodes_total, "time_total_s": self.time_total_s,
                "recent_returns": list(self.recent_returns), "recent_lengths": list(self.recent_lengths)}

    def set_counters_state(self, state: dict) -> None:
        self.iteration = state["iteration"]
        self.timesteps_total = state["timesteps_total"]
        self.episodes_total = state["episodes_total"]
        self.time_total_s = state.get("time_total_s", 0.0)
        self.recent_returns.extend(state.get("recent_returns", []))
        self.recent_lengths.extend(state.get("recent_lengths", []))

    # -- to be provided by algorithms -------------------------------------------------------
    def setup(self) -> None:
        """Start the declared execution pattern's workers on self.backend (self.execution: the bound pattern)."""
        if type(self).execution is not None:
            self.execution = type(self).execution.bind(self)

    def training_step(self) -> dict:
        """One iteration of the execution pattern's loop; returns learner stats (steps and episodes are
        counted by `record_batch`)."""
        if self.execution is None:
            raise NotImplementedError(f"{self.name} declares no execution pattern and no training_step")
        return self.execution.training_step()

    # -- hooks the execution patterns call (unirl.execution.loops) ---------------------------------
    def hyperparameters(self) -> dict[str, float]:
        """The scalars the loss and the optimizer read (inputs of the compiled steps): `lr` at least."""
        return {"lr": self.current_lr()}

    def exploration(self, worker_id: int | None = None) -> dict:
        """The exploration settings sent with sampling requests to worker `worker_id` (None: every worker);
        the keys the action distribution declares (Distribution.exploration_options), no others."""
        return {}

    def postprocess(self, batch):
        """Rows for the loss from a sampled batch (on the driver)."""
        raise NotImplementedError(f"{self.name} does not postprocess on the driver")

    def learn(self, rows: dict, hp: dict) -> dict:
        """The learner's update on postprocessed rows: one gradient step on all of them; returns stats."""
        stats = self.policy.learn_on_batch(rows, hp)
        self.policy.finish_learning()
        return self.policy.stats_numpy(stats)

    def learn_minibatch(self, rows: dict, hp: dict, step: int):
        """One gradient step on a replayed minibatch (replay patterns), `step` the learner's steps before it;
        returns the stats as tensors (Policy.learn_on_batch). Override to choose learners or add columns."""
        return self.policy.learn_on_batch(rows, hp)

    def learn_minibatches(self, minibatches: list, hp: dict, step: int):
        """`learn_minibatch` on each of several replayed minibatches (no priorities to update between them), the
        first being the learner's step `step`; returns the last stats. SAC overrides it to fuse the steps."""
        stats = None
        for i, rows in enumerate(minibatches):
            stats = self.learn_minibatch(rows, hp, step + i)
        return stats

    def after_update(self) -> None:
        """Called after each parameter update the pattern applies (a target sync every K updates, say)."""

    def after_samples(self) -> None:
        """Called once newly sampled env steps are counted and the learning owed for them is done."""

    # -- building -------------------------------------------------------------------------
    @classmethod
    def policy_spec(cls, config: AlgorithmConfig, env_spaces: tuple | None = None, seed: int | None = None) -> PolicySpec:
        """The acting policy as plain data: framework and module, chosen from the env's spaces (or `env_spaces`,
        (observation space, action space)), its weights initialised from `seed` (default: the run's)."""
        obs_space, act_space = env_spaces or spaces(config.env, config.env_config)
        check_batch_memory(config, obs_space)
        model = config.model_config()
        if model.lstm_cell_size and not cls.supports_recurrent:
            from unirl.registry import ALGORITHMS, get_algorithm_class

            able = [n for n in ALGORITHMS if getattr(get_algorithm_class(n), "supports_recurrent", False)]
            raise UnirlError(f"{cls.name} does not learn with a recurrent model (model.lstm_cell_size) yet; "
                             f"{', '.join(able)} do" + (" (R2D2 is DQN's recurrent form)." if cls.module_kind == "q"
                                                        else "."))
        module = build_module(cls.module_kind, obs_space, act_space, model)
        if getattr(module, "recurrent", False):
            from unirl.recurrent import sequence_length

            sequence_length(module, getattr(config, "rollout_fragment_length", None) or config.rollout_length)
        return PolicySpec(config.framework, module, config.seed if seed is None else seed, config.deterministic,
                          config.num_threads)

    @classmethod
    def optimizer(cls, config: AlgorithmConfig):
        """The optimizer chain (unirl.optim): clip by global norm, then Adam, unless overridden."""
        return default_optimizer(config.grad_clip)

    @classmethod
    def build_policy(cls, config: AlgorithmConfig, for_learning: bool = True, spec: PolicySpec | None = None) -> Policy:
        spec = spec or cls.policy_spec(config)
        if not for_learning:
            return spec.build()
        learns = cls.loss is not None or bool(cls.learners)
        optimizer = cls.optimizer(config) if learns else None
        return spec.build(loss=cls.loss, optimizer=optimizer, param_sets=cls.param_sets,
                          learners=cls.build_learners(config))

    @classmethod
    def build_learners(cls, config: AlgorithmConfig) -> tuple:
        """The policy's learners for this config (default: the class's `learners`)."""
        return tuple(cls.learners)

    def sampling_group(self):
        """What a synchronous pattern samples from instead of starting rollout workers (None: start them). A
        multi-agent run gives each policy's pattern a feed of that policy's batches (unirl.multi_agent)."""
        return self.__dict__.get("_sampling_group")

    def worker_specs(self, **options) -> list:
        """Rollout worker specs for this run: worker i hosts global envs [i * k, (i + 1) * k)."""
        from unirl.execution import worker_specs

        return worker_specs(self.config, self.acting_policy, **options)

    # -- the loop -------------------------------------------------------------------------
    def record_batch(self, batch) -> None:
        """Count a sampled batch's steps and episodes (every batch of an iteration adds up); with
        normalisation on, update the learner's statistics from it and scale its rewards in place
        (call it before postprocessing)."""
        from unirl import sample_batch as sb

        if self.normalizers.active and isinstance(batch, dict):
            self.normalizers.process(batch)

        self.record_episodes(batch[sb.EP_RETURNS], batch[sb.EP_LENGTHS], batch.count)
        if sb.REWARDS in batch and batch[sb.REWARDS].size:
            self.max_abs_reward = max(self.max_abs_reward, float(np.max(np.abs(batch[sb.REWARDS]))))

    def record_episodes(self, returns: np.ndarray, lengths: np.ndarray, steps: int | None = None) -> None:
        """Count `steps` env steps (default: the episodes' lengths summed) and these finished episodes, in order."""
        self.timesteps_total += int(lengths.sum()) if steps is None else steps
        self.episodes_total += len(returns)
        self.recent_returns.extend(returns.tolist())
        self.recent_lengths.extend(lengths.tolist())
        self._episodes_this_iter += len(returns)
        self._returns_this_iter = np.concatenate([self._returns_this_iter, returns])
        if self._episode_callbacks:
            for ret, length in zip(returns.tolist(), lengths.tolist()):
                self.callbacks.on_episode_end(self, ret, int(length))

    def train(self) -> dict:
        """Run one training iteration and return its result (metrics, counters, learner stats).

        Raises NonFiniteWeightsError (a UnirlError naming the iteration) if the weights became NaN or infinite."""
        if getattr(self, "_stopped", False):
            raise UnirlError(f"this {self.name} algorithm was stopped (stop() ends its workers), so it cannot train; "
                             "build a new one, or unirl.restore() a checkpoint saved before stop().")
        t0 = time.perf_counter()
        self._episodes_this_iter = 0
        self._returns_this_iter = np.zeros(0)
        stats = self.training_step()
        self.normalizers.sync()  # new observation statistics reach the workers with the next weights
        self.iteration += 1
        dt = time.perf_counter() - t0
        self.time_total_s += dt
        returns = np.asarray(self.recent_returns, np.float64)
        result = {
            "iteration": self.iteration,
            "timesteps_total": self.timesteps_total,
            "episodes_total": self.episodes_total,
            "episodes_this_iter": self._episodes_this_iter,
            "episode_return_mean": float(returns.mean()) if len(returns) else float("nan"),
            "episode_return_min": float(returns.min()) if len(returns) else float("nan"),
            "episode_return_max": float(returns.max()) if len(returns) else float("nan"),
            "episode_len_mean": float(np.mean(self.recent_lengths)) if len(returns) else float("nan"),
            "episode_returns_this_iter": [float(x) for x in self._returns_this_iter],
            "time_this_iter_s": dt,
            "time_total_s": self.time_total_s,
            "env_steps_per_s": self.timesteps_total / max(self.time_total_s, 1e-9),
        }
        result.update({f"learner/{k}": v for k, v in stats.items()})
        result.update(self.extra_metrics())
        self._check_value_scale(result)
        recovery = getattr(self.backend, "recovery", None)
        if recovery is not None:
            result["num_worker_restarts"] = recovery.num_worker_restarts
        flat = self.flat_weights()
        if not np.isfinite(flat).all():
            from unirl.errors import NonFiniteWeightsError

            raise NonFiniteWeightsError(self.name, self.iteration)
        from unirl.kernels import weights_digest

        result["weights_digest"] = weights_digest(flat)
        self.callbacks.on_train_result(self, result)
        return result

    #: Q-values (or TD errors) beyond this many times max|reward| / (1 - gamma), the largest |return| the rewards
    #: seen allow, mean the value function diverged.
    DIVERGENCE_MARGIN = 10.0

    def _check_value_scale(self, result: dict) -> None:
        """Value-based learners (a `learner/mean_q` stat): flag |mean Q| or the mean |TD error| beyond
        DIVERGENCE_MARGIN x max|reward| / (1 - gamma) in the result (`learner/value_diverging`), and warn once."""
        q = result.get("learner/mean_q")
        gamma = getattr(self.config, "gamma", None)
        if q is None or gamma is None or gamma >= 1.0 or self.max_abs_reward <= 0.0:
            return
        bound = self.DIVERGENCE_MARGIN * self.max_abs_reward / (1.0 - gamma)
        worst = max(abs(float(q)), abs(float(result.get("learner/mean_td_error", 0.0))))
        result["learner/value_diverging"] = worst > bound
        if worst > bound and not getattr(self, "_warned_divergence", False):
            import warnings

            from unirl.errors import UnirlWarning

            self._warned_divergence = True
            warnings.warn(f"{self.name}'s Q-values are diverging in iteration {self.iteration}: |mean Q| or the mean "
                          f"|TD error| is {worst:.3g}, beyond {bound:.3g} ({self.DIVERGENCE_MARGIN:g} x max|reward| "
                          f"{self.max_abs_reward:.3g} / (1 - gamma)); lower `lr`, sync the target network less often "
                          "(`target_network_update_freq`, `target_update_period`), or keep the learner's replay "
                          "ratio up (`min_training_intensity`).", UnirlWarning, stacklevel=3)

    def extra_metrics(self) -> dict:
        """Metrics added to each iteration's result beside the standard ones (multi-agent runs: per policy and agent)."""
        return {}

    def flat_weights(self) -> np.ndarray:
        """Every trained weight as one flat vector (what the weights digest hashes)."""
        return self.policy.get_flat_weights()

    def weights_digest(self) -> str:
        """A short fingerprint of the trained weights: equal digests, bit-identical weights (any machine)."""
        from unirl.kernels import weights_digest

        return weights_digest(self.flat_weights())

    def current_lr(self) -> float:
        from unirl.optim import piecewise_linear

        c = self.config
        if c.lr_schedule:
            return piecewise_linear(c.lr_schedule, self.timesteps_total, c.lr)
        if c.lr_decay_timesteps:
            return piecewise_linear([[0, c.lr], [c.lr_decay_timesteps, c.lr_final]], self.timesteps_total, c.lr)
        return c.lr

    # -- acting and evaluation -----------------------------------------------------------------
    def compute_actions(self, obs: np.ndarray, explore: bool = False, seed: int = 0) -> np.ndarray:
        """Actions for a batch of observations: greedy, or sampled with noise from `seed` if explore."""
        obs = np.asarray(obs, np.float32)
        if not hasattr(self, "_action_offset"):
            from unirl.env import action_offset

            # an env's Discrete(n, start=s) actions: the policy's are 0-based, the env's start at s
            self._action_offset = action_offset(self.config.env, self.config.env_config)
        if not explore:
            actions = self.policy.compute_actions(obs)
        else:
            noise = seeding.generator(seed, seeding.ACTION_NOISE).random((len(obs), self.policy.dist.noise_per_step))
            actions = self.policy.compute_actions(obs, noise)
        return actions if self._action_offset is None else actions + self._action_offset

    def evaluation_episodes(self, num_episodes: int | None = None) -> int:
        """The number of episodes evaluate() runs: num_episodes, or config evaluation_num_episodes if None;
        anything below 1 is an error (not silently the default)."""
        import numbers

        n = self.config.evaluation_num_episodes if num_episodes is None else num_episodes
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise UnirlError(f"evaluate() needs a number of episodes of at least 1, got {n!r}.")
        return int(n)

    def evaluate(self, num_episodes: int | None = None) -> dict:
        """Mean greedy return over num_episodes (default: config evaluation_num_episodes), each env seeded
        from (config seed, episode index)."""
        n = self.evaluation_episodes(num_episodes)
        returns = evaluate_policy(self.policy, self.config.env, self.config.env_config, n, self.config.seed)
        return {"evaluation/episode_return_mean": float(returns.mean()), "evaluation/episodes": n,
                "evaluation/episode_returns": returns.tolist(), "weights_digest": self.weights_digest()}

    # -- checkpoints ---------------------------------------------------------------------------
    def get_state(self) -> tuple[dict, dict]:
        arrays = self.policy.get_state()
        if self.normalizers.active:
            arrays.update(self.normalizers.get_state())
        state = {
            "algorithm": self.name,
            # The import path that loads this class: restore and evaluate find a plugin algorithm by it.
            "algorithm_class": f"{type(self).__module__}:{type(self).__qualname__}",
            "config": self.config.to_dict(),
            **self.counters_state(),
            "learner_rng": self.learner_rng.bit_generator.state,
            "format": 2,
            "param_names": list(self.policy.layout.names),  # the flat order the weights digest hashes
        }
        if self.execution is not None:
            more_arrays, more = self.execution.get_state()
            arrays.update(more_arrays)
            state.update(more)
        return arrays, state

    def set_state(self, arrays: dict, state: dict) -> None:
        self.policy.set_state(arrays)
        self.normalizers.set_state(arrays)
        self.set_counters_state(state)
        self.learner_rng.bit_generator.state = state["learner_rng"]
        if self.execution is not None:
            self.execution.set_state(arrays, state)

    def _patterns_with_worker_state(self) -> dict:
        """The execution patterns of this algorithm that can give and take their workers' states
        (`get_worker_states` / `set_worker_states`, in global env order), by attribute name."""
        return {k: v for k, v in sorted(vars(self).items())
                if callable(getattr(v, "get_worker_states", None)) and callable(getattr(v, "set_worker_states", None))}

    def get_worker_states(self) -> dict:
        """The workers' states (envs, per-env noise, episode accumulators) of every pattern: what exact resume needs."""
        return {k: p.get_worker_states() for k, p in self._patterns_with_worker_state().items()}

    def set_worker_states(self, states: dict) -> None:
        patterns = self._patterns_with_worker_state()
        for k, v in states.items():
            if k in patterns:
                patterns[k].set_worker_states(v)

    def save(self, path: str) -> str:
        """Write a checkpoint folder (weights.npz + state.json, and the workers' states in
        worker_state.pkl) atomically and return its path."""
        import cloudpickle

        arrays, state = self.get_state()
        workers = self.get_worker_states()
        blob = cloudpickle.dumps(workers) if workers else None
        path = save_checkpoint(path, arrays, state, worker_state=blob)
        self.callbacks.on_checkpoint(self, path)
        return path

    def restore(self, path: str, resume: bool = False, trust_checkpoint: bool = False) -> str:
        """Load a checkpoint (a folder, or a run folder's latest whole one) and return its folder.

        resume=True also restores the workers' env states, so training continues exactly as the
        run that saved it would have (bit-identical results)."""
        from unirl.checkpoint import load_latest, read_worker_state

        folder, arrays, state = load_latest(path)
        workers = read_worker_state(folder, state, trust=trust_checkpoint) if resume else None
        self.set_state(arrays, state)
        if workers:
            self.set_worker_states(workers)
        return folder

    @classmethod
    def from_checkpoint(cls, path: str, resume: bool = False, trust_checkpoint: bool = False,
                        **overrides) -> "Algorithm":
        """A new algorithm from a checkpoint; overrides (e.g. framework="jax") change the saved config.

        A checkpoint naming code outside unirl's registries is refused unless trust_checkpoint=True."""
        from unirl.checkpoint import check_trusted, load_latest, read_worker_state

        folder, arrays, state = load_latest(path)
        check_trusted(state, overrides, trust_checkpoint)
        workers = read_worker_state(folder, state, trust=trust_checkpoint) if resume else None
        callbacks = overrides.pop("callbacks", None)
        config = dict(state["config"])
        config.update(overrides)
        algo = cls(config, callbacks=callbacks)
        try:
            algo.set_state(arrays, state)
            if workers:
                algo.set_worker_states(workers)
        except BaseException:
            algo.stop()
            raise
        return algo

    def stop(self) -> None:
        self._stopped = True
        self.backend.shutdown()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False
