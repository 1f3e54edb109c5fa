"""Ape-X DQN (Horgan et al. 2018): distributed prioritized replay on the "async replay" execution pattern.

Actors act epsilon-greedily with one epsilon per env, eps_i = eps ** (1 + alpha * i / (N - 1)) keyed
by the GLOBAL env index i of N (so the split of envs over actors changes no epsilon), build n-step
rows and their initial priorities with their own copy of the network, and return them; the driver
sends them to replay shards (stateful workers on the backend); the learner pulls prioritized
minibatches from the shards, learns with DQN's loss (double Q, Huber, target network) and sends
the new priorities back. Actors get fresh weights every `weight_sync_period` learner steps.

The learner runs free of the actors, as in the paper: it takes a gradient step whenever no actor
result is waiting (at most `training_intensity` steps per env step sampled, the cap), so actors
are relaunched at once and the replay ratio is what the machine gives; it is recorded.

Asynchronous, so free-running runs differ; a run is replayable: `get_state()[1]["arrival_schedule"]`
lists the driver's choices in order, an actor id for each result consumed and `num_workers` (the
learner's id) for each learner turn, and the config key `arrival_schedule` replays it bit for bit
on any backend (same number of actors).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from unirl import sample_batch as sb
from unirl import seeding
from unirl.algorithm import Algorithm
from unirl.algorithms.dqn import DISCOUNTS, NEXT_OBS, WEIGHTS, DQN, DQNConfig, n_step_rows
from unirl.config import AsyncConfig
from unirl.conformance_spec import REPLAYABLE, ConformanceSpec
from unirl.errors import UnirlError
from unirl.execution.async_replay import AsyncReplay
from unirl.replay import PrioritizedReplayBuffer, prefixed, unprefixed
from unirl.rollout import RolloutWorker

#: Seed stream of the replay shards' sampling generators (entropy tag; see unirl.seeding).
REPLAY_SHARD_STREAM = 1011
#: Seconds the driver waits for an actor result already on its way before taking a learner step instead.
POLL_S = 1e-4


@dataclass
class ApeXConfig(DQNConfig, AsyncConfig):
    """Ape-X's options (plus DQN's). `num_workers` is the number of actors; replay is always prioritized."""

    #: Actors (rollout workers), each hosting num_envs_per_worker envs.
    num_workers: int = 2
    #: Env steps per iteration over all envs: each actor task samples train_batch_size / (total envs) steps of its envs.
    train_batch_size: int = 64
    #: Replay shards (stateful workers holding a prioritized buffer each).
    num_replay_shards: int = 2
    #: Rows each shard holds.
    replay_buffer_capacity: int = 50_000
    #: Base epsilon of the per-env schedule eps_i = eps ** (1 + alpha * i / (N - 1)).
    apex_epsilon: float = 0.4
    #: Exponent spread alpha of that schedule.
    apex_epsilon_alpha: float = 7.0
    #: Send the learner's weights to an actor when its copy is this many learner steps old.
    weight_sync_period: int = 16
    #: Minibatches the learner pulls from a shard in one request (and whose priorities it sends back in
    #: one message): a learner turn takes up to this many gradient steps. More divides the messages per
    #: learner step (each costs ~1 ms of CPU on Ray) at the price of priorities that lag by up to this
    #: many steps within a turn. 1 is the paper's learner: one minibatch per request.
    replay_batches_per_request: int = 1
    #: Actor results consumed per iteration (0: one per actor).
    actor_batches_per_iteration: int = 0
    #: Learner steps per env step the learner never falls below: the driver steps before it consumes more
    #: actor results (actors wait meanwhile). 0: the learner runs free; training_intensity is the cap.
    min_training_intensity: float = 0.0

    def validate(self) -> None:
        super().validate()
        if self.num_replay_shards < 1 or self.weight_sync_period < 1 or self.replay_batches_per_request < 1:
            raise UnirlError("config keys `num_replay_shards`, `weight_sync_period` and `replay_batches_per_request` "
                             "must be at least 1.")
        if not 0.0 <= self.min_training_intensity <= self.training_intensity:
            raise UnirlError("config key `min_training_intensity` must lie in [0, training_intensity], "
                             f"got {self.min_training_intensity}.")
        if not 0.0 <= self.apex_epsilon <= 1.0:
            raise UnirlError(f"config key `apex_epsilon` must lie in [0, 1], got {self.apex_epsilon}.")


def apex_epsilons(num_envs: int, eps: float, alpha: float) -> np.ndarray:
    """eps_i = eps ** (1 + alpha * i / (N - 1)) for global env index i of N (eps itself when N is 1)."""
    if num_envs == 1:
        return np.array([eps], np.float64)
    i = np.arange(num_envs, dtype=np.float64)
    return eps ** (1.0 + alpha * i / (num_envs - 1))


def initial_priorities(q: np.ndarray, q_next: np.ndarray, rows: dict, eps: float) -> np.ndarray:
    """|TD error| + eps of the rows from the actor's own network (it stands in for the target network too)."""
    q = q.astype(np.float64)
    q_next = q_next.astype(np.float64)
    target = rows[sb.REWARDS] + rows[DISCOUNTS] * (1.0 - rows[sb.TERMINATEDS]) * q_next.max(axis=-1)
    td = q[np.arange(len(q)), rows[sb.ACTIONS]] - target
    return np.abs(td) + eps


class ApeXActor(RolloutWorker):
    """A rollout worker that returns n-step rows with initial priorities (and a summary for the counters)."""

    def __init__(self, spec, epsilons, gamma: float, n_step: int, priority_eps: float):
        super().__init__(spec)
        self.epsilon = np.asarray(epsilons, np.float64)[spec.env_start:spec.env_start + spec.num_envs]
        self.gamma, self.n_step, self.priority_eps = gamma, n_step, priority_eps

    @staticmethod
    def preload_modules(spec, *rest) -> list[str]:
        return RolloutWorker.preload_modules(spec)

    def sample_with_priorities(self, flat_weights=None):
        batch = self.sample(flat_weights, epsilon=self.epsilon)
        rows = n_step_rows(batch, self.gamma, self.n_step)
        n = len(rows[sb.OBS])
        q = self.policy.forward(np.concatenate([rows[sb.OBS], rows[NEXT_OBS]]))["q"]
        prios = initial_priorities(q[:n], q[n:], rows, self.priority_eps)
        summary = sb.SampleBatch({k: batch[k] for k in (sb.REWARDS, sb.EP_KEYS, sb.EP_RETURNS, sb.EP_LENGTHS)})
        return summary, rows, prios


class ReplayShard:
    """A prioritized replay buffer as a stateful worker, sampling with its own seeded generator."""

    def __init__(self, shard_index: int, seed: int, capacity: int, alpha: float, eps: float):
        self.buffer = PrioritizedReplayBuffer(capacity, alpha, eps)
        self.rng = np.random.Generator(np.random.PCG64(seeding.seed_sequence(seed, REPLAY_SHARD_STREAM, shard_index)))

    def add(self, rows, priorities) -> int:
        self.buffer.add(rows, priorities)
        return len(self.buffer)

    def sample(self, n: int, beta: float, count: int) -> list:
        """`count` minibatches of n rows, [(rows, indices, importance weights)], drawn one after another."""
        return [self.buffer.sample(n, self.rng, beta) for _ in range(count)]

    def update_priorities(self, updates) -> None:
        """Apply [(indices, td_errors)] in order."""
        for idx, td_errors in updates:
            self.buffer.update_priorities(idx, td_errors)

    def get_state(self):
        arrays, meta = self.buffer.get_state()
        meta["rng"] = self.rng.bit_generator.state
        return arrays, meta

    def set_state(self, arrays, meta) -> None:
        self.buffer.set_state(arrays, meta)
        self.rng.bit_generator.state = meta["rng"]


class ApeX(DQN):
    name = "APEX"
    config_class = ApeXConfig
    supports_normalization = False
    conformance = ConformanceSpec(
        run_config={"env": "CartPole-v1", "total_envs": 12, "train_batch_size": 48, "learning_starts": 0, "actor_batches_per_iteration": 2,
                    "replay_batch_size": 32, "training_intensity": 0.25, "target_network_update_freq": 96,
                    "num_replay_shards": 2, "weight_sync_period": 4,
                    "model": {"hidden_sizes": [32, 32], "activation": "relu"}},
        learning={"config": {"env": "CartPole-v1", "num_workers": 4, "num_envs_per_worker": 2,
                             "min_training_intensity": 0.5}, "score": 475.0,
                  "budget": 100_000, "eval_episodes": 20},
        # Asynchronous: levels 2 and 3 replay the free-running reference run's recorded schedule.
        reproducibility=REPLAYABLE,
    )

    def setup(self) -> None:
        c = self.config
        eps = apex_epsilons(c.num_envs, c.apex_epsilon, c.apex_epsilon_alpha)
        actor_args = [(s, eps, c.gamma, c.n_step, c.prioritized_replay_eps) for s in self.worker_specs()]
        shard_args = [(j, c.seed, c.replay_buffer_capacity, c.prioritized_replay_alpha, c.prioritized_replay_eps)
                      for j in range(c.num_replay_shards)]
        self.pattern = AsyncReplay(self.backend, ApeXActor, actor_args, ReplayShard, shard_args,
                                   replay_schedule=c.arrival_schedule, timeout=c.worker_timeout_s or None)
        self.grad_steps = 0
        self.learner_turns = 0  # learner turns so far (grad_steps when replay_batches_per_request is 1)
        self.last_target_update = 0
        self.target_updates = 0
        self.rows_in_shards = 0
        self.results_since_step = 0  # actor results consumed since the last learner step (free-running only)
        self.pattern.start(self.policy.get_flat_weights(), 0)

    def grad_steps_due(self) -> int:
        """Learner steps allowed now: the training_intensity cap minus the steps taken (0 before learning starts)."""
        c = self.config
        if self.timesteps_total < c.learning_starts or self.pattern.batches_consumed < self.pattern.num_shards:
            return 0
        return max(0, int(c.training_intensity * (self.timesteps_total - c.learning_starts)) - self.grad_steps)

    @property
    def learner_id(self) -> int:
        """The learner's id in the arrival schedule (after the actors' 0 .. num_workers - 1)."""
        return len(self.pattern.actors)

    def learner_turn(self, hp) -> tuple[dict, int]:
        """(stats of the last step, steps taken): a learner turn, one entry in the schedule. It pulls up to
        replay_batches_per_request minibatches (as many as are due) from a shard in one request (the next
        turn's requested ahead while more steps are due), takes a gradient step on each and sends their
        new priorities back to that shard in one message."""
        c = self.config
        p = self.pattern
        p.schedule.recorded.append(self.learner_id)
        due = self.grad_steps_due()
        count = max(1, min(c.replay_batches_per_request, due))
        shard, batches = p.replay(self.learner_turns, c.replay_batch_size, self.beta(), count,
                                  prefetch=min(c.replay_batches_per_request, due - count))
        updates = []
        for rows, idx, weights in batches:
            rows[WEIGHTS] = weights
            stats = self.policy.learn_on_batch(rows, hp)
            updates.append((idx, self.policy.stats_numpy({"td_error": stats["td_error"]})["td_error"]))
            self.grad_steps += 1
        p.update_priorities(shard, updates)
        self.learner_turns += 1
        return stats, count

    def below_min_intensity(self) -> bool:
        c = self.config
        return self.grad_steps < int(c.min_training_intensity * (self.timesteps_total - c.learning_starts))

    def learner_turn_now(self, results_since_step: int) -> bool:
        """Whether the driver's next move is a learner step (else it consumes an actor result).

        Replaying: what the recorded run did. Free-running: a step when one is allowed (learning has
        started and the steps stay within training_intensity per env step) and no actor result is
        waiting, or every actor has delivered once since the last step (so a fast fleet cannot starve
        the learner), or the learner is below min_training_intensity; on a backend whose workers run in
        the driver, whenever one is allowed."""
        p = self.pattern
        if p.schedule.replaying:
            p.replay_due_restarts(self.grad_steps, self.policy.get_flat_weights)
            step = len(p.schedule.recorded)
            if step >= len(p.schedule.replay):
                raise UnirlError(f"the replayed schedule ends after {len(p.schedule.replay)} entries; "
                                 "this run asks for more (was it recorded with a longer stop condition?).")
            return p.schedule.replay[step] == self.learner_id
        if self.grad_steps_due() <= 0:
            return False
        if self.backend.runs_in_driver or results_since_step >= len(p.actors) or self.below_min_intensity():
            return True
        ready, _ = self.backend.wait(list(p.pending.values()), num_returns=1, timeout=POLL_S)
        return not ready

    def training_step(self) -> dict:
        c = self.config
        p = self.pattern
        out = {}
        count = c.actor_batches_per_iteration or c.num_workers
        hp = self.policy.hp_tensors(self.hyperparameters())
        staleness = []
        stats = None
        consumed = learner_steps = 0
        while consumed < count:
            if self.learner_turn_now(self.results_since_step):
                stats, steps = self.learner_turn(hp)
                self.results_since_step = 0
                learner_steps += steps
                continue
            _, (summary, rows, prios), stale = p.consume(self.grad_steps, self.policy.get_flat_weights,
                                                         c.weight_sync_period)
            consumed += 1
            self.results_since_step += 1
            staleness.append(stale)
            self.record_batch(summary)
            p.add_to_shard(rows, prios)
            self.rows_in_shards += len(prios)
            self.sync_target()
        p.flush()
        self.policy.finish_learning()
        if stats is not None:
            out.update(self.policy.stats_numpy({k: v for k, v in stats.items() if k != "td_error"}))
        replayed = self.grad_steps * c.replay_batch_size
        out.update({"grad_steps": self.grad_steps, "grad_steps_this_iter": learner_steps,
                    "target_updates": self.target_updates,
                    "weight_syncs": p.weight_syncs,
                    "replay_ratio": replayed / max(self.timesteps_total, 1),
                    "weight_staleness_mean": float(np.mean(staleness)),
                    "weight_staleness_mean_total": p.staleness_sum / max(p.batches_consumed, 1),
                    "replay_rows": min(self.rows_in_shards, c.replay_buffer_capacity * c.num_replay_shards),
                    "beta": self.beta(), "lr": self.current_lr()})
        return out

    # -- checkpoints: shard buffers, the recorded schedule, the pattern's counters ----------------
    def get_state(self):
        arrays, state = Algorithm.get_state(self)  # weights and counters; the shards replace DQN's buffer
        shard_meta = []
        for j, (a, meta) in enumerate(self.pattern.shard_states()):
            arrays.update(prefixed(a, f"replay/shard{j}"))
            shard_meta.append(meta)
        p = self.pattern
        state.update({"replay_shards": shard_meta, "grad_steps": self.grad_steps, "learner_turns": self.learner_turns,
                      "last_target_update": self.last_target_update, "target_updates": self.target_updates,
                      "arrival_schedule": list(p.schedule.recorded), "batches_consumed": p.batches_consumed,
                      "weight_syncs": p.weight_syncs, "staleness_sum": p.staleness_sum,
                      "rows_in_shards": self.rows_in_shards})
        return arrays, state

    def set_state(self, arrays, state) -> None:
        Algorithm.set_state(self, arrays, state)
        if "replay_shards" in state:
            self.pattern.set_shard_states([(unprefixed(arrays, f"replay/shard{j}"), meta)
                                           for j, meta in enumerate(state["replay_shards"])])
        self.grad_steps = int(state.get("grad_steps", 0))
        self.learner_turns = int(state.get("learner_turns", self.grad_steps))
        self.last_target_update = int(state.get("last_target_update", 0))
        self.target_updates = int(state.get("target_updates", 0))
        self.rows_in_shards = int(state.get("rows_in_shards", 0))
        p = self.pattern
        p.batches_consumed = int(state.get("batches_consumed", 0))
        p.weight_syncs = int(state.get("weight_syncs", 0))
        p.staleness_sum = int(state.get("staleness_sum", 0))
        p.schedule.recorded = [int(w) for w in state.get("arrival_schedule", [])]
