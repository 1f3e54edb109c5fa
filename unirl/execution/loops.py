"""Execution patterns as components: each owns its driver loop; an algorithm declares one and plugs in its parts.

An algorithm class declares its pattern (plain data: options and worker-side functions) and
provides the driver-side hooks; the pattern, bound to one algorithm when it is built, starts the
workers and runs one iteration per `training_step()`:

    class A3C(Algorithm):
        loss = staticmethod(actor_critic_loss)
        execution = loops.AsyncGradients(postprocess=a3c_rows)   # worker-side rows(policy, batch, config)

The hooks a pattern calls on its algorithm (unirl.algorithm.Algorithm has a default for each):

| hook | called |
|---|---|
| `hyperparameters()` | before learning: the loss's and optimizer's scalars (`lr`, ...) |
| `exploration(worker_id)` | with every sampling request: the distribution's exploration settings (`epsilon`), per worker |
| `postprocess(batch)` | on the driver: sampled batch (or fragments) -> rows the loss reads |
| `learn(rows, hp)` | on the driver: the learner's update on rows -> stats |
| `learn_minibatch(rows, hp, step)` | replay patterns, on the driver: one gradient step on a replayed minibatch |
| `learn_minibatches(minibatches, hp, step)` | replay patterns without priorities: an iteration's minibatches at once |
| `after_update()` | after each update the pattern applies (async gradients: every gradient) |
| `after_samples()` | after new env steps are counted and the learning owed for them is done (a target sync by env steps) |

What a pattern owns besides the loop: which parameter sets reach the workers (every set the
algorithm keeps, each with its version, `worker_sets`), its recorded arrival schedule and
counters in the algorithm's checkpoints (`get_state` / `set_state`), the conformance suite's view
of the workers' learning calls (the recorder on in-process backends; `audit` recomputation), and
the workers' states for exact resume.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import numpy as np

from unirl import sample_batch as sb
from unirl.errors import UnirlError
from unirl.execution import async_gradients as _ag
from unirl.execution import async_replay as _ar
from unirl.execution import async_samples as _as
from unirl.execution import replay as _sr
from unirl.execution import sync_samples as _ss
from unirl.replay import WEIGHTS, make_buffer, prefixed, unprefixed


def exploration(algo, worker_id: int | None = None) -> dict:
    """algo.exploration(worker_id), checked on the driver against what the action distribution declares
    (a misspelt or missing option is a one-sentence UnirlError here, before any worker samples)."""
    explore = algo.exploration(worker_id)
    algo.policy.dist.check_exploration(explore)
    return explore


def mean_stats(stats: list[dict]) -> dict:
    """The mean of each scalar stat over a list of stats dicts (the keys of the first)."""
    return {k: float(np.mean([s[k] for s in stats])) for k in stats[0]}


class Execution:
    """Base of the patterns: a declaration, bound to one algorithm by `bind` (a copy that starts the workers)."""

    #: The algorithm attribute that names the pattern's worker driver (and keys its workers' states in checkpoints).
    driver_attr = "pattern"
    #: The worker driver once bound (unirl.execution.<pattern> module's class).
    driver = None

    def bind(self, algo) -> "Execution":
        bound = copy.copy(self)
        bound.algo = algo
        bound.driver = bound.start(algo)
        setattr(algo, self.driver_attr, bound.driver)
        return bound

    def start(self, algo):
        """Start the workers on algo.backend; return the worker driver."""
        raise NotImplementedError

    def training_step(self) -> dict:
        raise NotImplementedError

    def get_state(self) -> tuple[dict, dict]:
        """(arrays, JSON entries) the pattern adds to the algorithm's checkpoint."""
        return {}, {}

    def set_state(self, arrays: dict, state: dict) -> None:
        pass


# -- synchronous ------------------------------------------------------------------------------------------
class SyncSamples(Execution):
    """Broadcast the weights, every worker samples, the batch joined in env order; postprocess and learn on the driver."""

    driver_attr = "sampler"

    def start(self, algo):
        group = algo.sampling_group()
        return _ss.SyncSamples(algo.backend, algo.worker_specs() if group is None else [], group=group)

    def training_step(self) -> dict:
        a = self.algo
        batch = self.driver.sample(a.policy.get_flat_weights(), **exploration(a))
        a.record_batch(batch)
        rows = a.postprocess(batch)
        hp = a.hyperparameters()
        out = a.learn(rows, hp)
        a.after_samples()
        out["lr"] = hp["lr"]
        return out


class SyncReplay(Execution):
    """As SyncSamples, but rows go into a replay buffer (in env order) and the learner takes `training_intensity`
    gradient steps per env step on minibatches replayed from it (prioritized: new |TD errors| as priorities).

    Config keys read: replay_buffer_capacity, replay_batch_size, learning_starts, training_intensity,
    prioritized_replay (and its alpha, beta, beta annealing and eps)."""

    driver_attr = "sampler"

    def __init__(self, priority_stat: str = "td_error", catch_up: bool = False):
        #: The per-row learner stat that becomes the replayed rows' new priorities.
        self.priority_stat = priority_stat
        #: Once learning starts, owe gradient steps for every env step sampled, those before learning_starts too
        #: (PETS: the model trains on its random first data before it is first planned with).
        self.catch_up = catch_up

    def start(self, algo):
        c = algo.config
        self.buffer = algo.buffer = make_buffer(c.replay_buffer_capacity, c.prioritized_replay,
                                                c.prioritized_replay_alpha, c.prioritized_replay_eps)
        self.grad_steps = 0
        group = algo.sampling_group()
        return _sr.SyncReplay(algo.backend, algo.worker_specs() if group is None else [], self.buffer, algo.postprocess,
                              group=group)

    def beta(self) -> float:
        from unirl.optim import linear_schedule

        c = self.algo.config
        return linear_schedule(self.algo.timesteps_total, c.prioritized_replay_beta, 1.0,
                               c.prioritized_replay_beta_annealing_timesteps)

    def grad_steps_due(self) -> int:
        """Gradient steps owed: training_intensity per env step sampled since learning_starts."""
        c, a = self.algo.config, self.algo
        if a.timesteps_total < c.learning_starts or len(self.buffer) == 0:
            return 0
        owed = int(c.training_intensity * (a.timesteps_total - (0 if self.catch_up else c.learning_starts)))
        return max(0, owed - self.grad_steps)

    def learn_from_replay(self, num_steps: int) -> dict:
        a = self.algo
        hp = a.policy.hp_tensors(a.hyperparameters())
        stats = None
        if not self.buffer.prioritized and num_steps:
            # no priorities to update between steps: the minibatches are drawn first (the same draws in the same
            # order) and the algorithm may learn on them together (learn_minibatches)
            minibatches = []
            for _ in range(num_steps):
                rows, _, weights = self.driver.replay(a.config.replay_batch_size, a.learner_rng, self.beta())
                rows[WEIGHTS] = weights
                minibatches.append(rows)
            stats = a.learn_minibatches(minibatches, hp, self.grad_steps)
            self.grad_steps += num_steps
            num_steps = 0
        for _ in range(num_steps):
            rows, idx, weights = self.driver.replay(a.config.replay_batch_size, a.learner_rng, self.beta())
            rows[WEIGHTS] = weights
            stats = a.learn_minibatch(rows, hp, self.grad_steps)
            td = a.policy.stats_numpy({self.priority_stat: stats[self.priority_stat]})[self.priority_stat]
            self.driver.update_priorities(idx, td)
            self.grad_steps += 1
        a.policy.finish_learning()
        if stats is None:
            return {}
        return a.policy.stats_numpy({k: v for k, v in stats.items() if k != self.priority_stat})

    def training_step(self) -> dict:
        a = self.algo
        explore = exploration(a)
        batch = self.driver.sample(a.policy.get_flat_weights(), **explore)
        a.record_batch(batch)
        out = self.learn_from_replay(self.grad_steps_due())
        a.after_samples()
        out.update(explore)
        out.update({"grad_steps": self.grad_steps, "replay_size": len(self.buffer), "lr": a.current_lr()})
        if self.buffer.prioritized:
            out["beta"] = self.beta()
        return out

    def get_state(self):
        buf_arrays, buf_meta = self.buffer.get_state()
        return prefixed(buf_arrays, "replay"), {"replay": buf_meta, "grad_steps": self.grad_steps}

    def set_state(self, arrays, state) -> None:
        if "replay" in state:
            self.buffer.set_state(unprefixed(arrays, "replay"), state["replay"])
        self.grad_steps = int(state.get("grad_steps", 0))


# -- asynchronous -----------------------------------------------------------------------------------------
class _Scheduled(Execution):
    """An asynchronous pattern: a recorded (or replayed) arrival schedule and a weights version in checkpoints."""

    def get_state(self):
        return {}, {"arrival_schedule": list(self.driver.schedule.recorded), "weights_version": self.version}

    def set_state(self, arrays, state) -> None:
        self.version = state.get("weights_version", 0)


def fragment_specs(algo, **options) -> list:
    specs = algo.worker_specs(**options)
    for s in specs:
        s.rollout_length = algo.config.rollout_fragment_length
    return specs


@dataclass
class WorkerLearner:
    """What a gradient worker needs to learn (plain data, pickles): the loss, its parameter sets, and the
    worker-side postprocessing `postprocess(policy, batch, config) -> rows`."""

    loss: Callable
    param_sets: tuple
    postprocess: Callable
    config: object

    def build_policy(self, policy_spec):
        policy = policy_spec.build(loss=self.loss, param_sets=self.param_sets)
        policy.forget_versions()  # every set must come from the driver before the loss reads it
        return policy

    def rows(self, policy, batch) -> dict:
        return self.postprocess(policy, batch, self.config)


class AsyncGradients(_Scheduled):
    """Workers sample and compute gradients with the parameter sets they were sent; the driver applies each
    gradient as it is consumed (by the arrival schedule) and sends that worker every set anew.

    `postprocess(policy, batch, config) -> rows` runs in the workers (module-level: it travels by
    reference). `worker_sets`: the parameter sets sent with every request (None: every set the algorithm
    keeps); a set the loss reads that is not among them is an error when the algorithm is built.
    `audit` (the conformance suite sets it): recompute every `audit`-th consumed gradient on the driver
    from the sets it sent and the rows the worker learned on; differences are kept in `audit_findings`."""

    def __init__(self, postprocess: Callable, worker_sets: tuple | None = None, audit: int = 0):
        self.postprocess = postprocess
        self.worker_sets = worker_sets
        self.audit = audit

    def start(self, algo):
        c = algo.config
        sets = tuple(self.worker_sets or algo.param_sets)
        unsent = [s for s in algo.param_sets if s not in sets]
        if unsent:
            raise UnirlError(f"{algo.name}'s loss reads parameter set `{unsent[0]}`, which its AsyncGradients "
                             f"pattern does not send to the workers (worker_sets={sets}); add it.")
        self.sets = sets
        self.learner = WorkerLearner(type(algo).loss, tuple(algo.param_sets), self.postprocess, c)
        driver = _ag.AsyncGradients(algo.backend, fragment_specs(algo), self.learner, replay=c.arrival_schedule,
                                    timeout=c.worker_timeout_s or None)
        driver.replacement_args = self._request
        self.version = 0  # gradients applied so far: the weights version
        self.lags: list[int] = []
        self.audit_findings: list[str] = []
        self.audited = 0
        self._sent: dict = {}
        self._shadow = None
        if algo.backend.runs_in_driver:
            # Workers in this process: their learning calls reach the algorithm policy's recorder (the
            # conformance suite captures an algorithm's own loss inputs that way).
            for w in driver.workers:
                algo.backend.get(algo.backend.call(w, "set_recorder", self._recorder))
        return driver

    def _recorder(self, kind, policy, batch, hp, options):
        if self.algo.policy.recorder is not None:
            self.algo.policy.recorder(kind, policy, batch, hp, options)

    def _request(self, wid: int) -> tuple:
        """The arguments of a compute_gradients request to worker `wid`: every set with its version, hp, exploration."""
        a = self.algo
        sets = a.policy.get_parameter_sets(self.sets)
        versions = {s: a.policy.versions[s] for s in self.sets}
        audit = bool(self.audit) and self.driver is not None and self.driver._submitted % self.audit == 0
        if audit:
            self._sent[self.driver._submitted] = (sets, versions, dict(self._hp))
        return (sets, versions, self._hp, exploration(a, wid), audit), self.version

    def submit(self, wid: int) -> None:
        args, version = self._request(wid)
        self.driver.submit(wid, args, version)

    def training_step(self) -> dict:
        a = self.algo
        self._hp = a.hyperparameters()
        for wid in self.driver.idle_workers:
            self.submit(wid)
        steps, stats, lags = 0, [], []
        while steps < a.config.train_batch_size:
            result = self.driver.next()
            grad, worker_stats, counters, used, rows = result.value
            if rows is not None:
                self._check(result, grad, used, rows)
            a.record_batch(counters)
            steps += counters.count
            lags.append(self.version - result.version)
            a.policy.apply_gradients(grad, self._hp)
            self.version += 1
            stats.append(worker_stats)
            a.after_update()
            self._hp = a.hyperparameters()
            self.submit(result.worker_id)
        self.lags.extend(lags)
        out = mean_stats(stats)
        out.update(lr=self._hp["lr"], num_gradients=len(stats), policy_lag_mean=float(np.mean(lags)),
                   policy_lag_max=int(max(lags)), weights_version=self.version)
        return out

    def _check(self, result, grad, used, rows) -> None:
        """Recompute an audited gradient on the driver from the sets it sent; record any difference."""
        sets, versions, hp = self._sent.pop(result.request)
        if self._shadow is None:
            self._shadow = self.learner.build_policy(self.algo.acting_policy)
        self._shadow.set_parameter_sets(sets, versions)
        expected, _ = self._shadow.compute_gradients(rows, hp)
        self.audited += 1
        if used != versions:
            self.audit_findings.append(f"worker {result.worker_id} reported parameter-set versions {used}, "
                                       f"the driver sent {versions}")
        elif not np.array_equal(expected, grad):
            diff = int(np.sum(expected != grad))
            self.audit_findings.append(f"worker {result.worker_id}'s gradient (request {result.request}) differs "
                                       f"from the driver's recomputation in {diff} of {grad.size} entries: the "
                                       "worker learned with parameter sets other than those it was sent")


class AsyncSamples(_Scheduled):
    """Actors sample with the weights they were last sent and return fragments with their behaviour distribution
    inputs; the learner consumes fragments (by the arrival schedule) until it has train_batch_size steps,
    postprocesses them (`postprocess(fragments)`, e.g. V-trace) and learns (`learn(rows, hp)`), then re-requests
    the actors that returned with the new weights; `learner_steps_per_iteration` such steps an iteration."""

    def start(self, algo):
        c = algo.config
        self.version = 0  # learner steps so far: the weights version
        driver = _as.AsyncSamples(algo.backend, fragment_specs(algo, record_dist_inputs=True),
                                  c.requests_in_flight_per_worker(), replay=c.arrival_schedule,
                                  timeout=c.worker_timeout_s or None)
        driver.replacement_args = lambda wid: (self.algo.policy.get_flat_weights(), self.version,
                                               exploration(self.algo, wid))
        return driver

    def fill(self) -> None:
        a = self.algo
        weights = a.policy.get_flat_weights()
        for wid in self.driver.in_flight:
            while self.driver.request(wid, weights, self.version, **exploration(a, wid)):
                pass

    def learner_step(self) -> tuple[dict, list[int]]:
        a = self.algo
        fragments, returned, lags, steps = [], [], [], 0
        while steps < a.config.train_batch_size:
            if not any(self.driver.in_flight.values()):
                # A train batch larger than all queued fragments: top the actors up with the current
                # weights instead of waiting forever (never happens when the queues cover a batch).
                self.fill()
            result = self.driver.next()
            batch = result.value
            a.record_batch(batch)
            steps += batch.count
            fragments.append(batch)
            returned.append(result.worker_id)
            lags.append(self.version - result.version)
        rows = a.postprocess(fragments)
        hp = a.hyperparameters()
        stats = a.learn(rows, hp)
        self.version += 1
        a.after_update()
        stats["lr"] = hp["lr"]
        weights = a.policy.get_flat_weights()
        for wid in returned:
            self.driver.request(wid, weights, self.version, **exploration(a, wid))
        return stats, lags

    def training_step(self) -> dict:
        self.fill()
        all_stats, lags = [], []
        for _ in range(self.algo.config.learner_steps_per_iteration):
            stats, step_lags = self.learner_step()
            all_stats.append(stats)
            lags += step_lags
        out = mean_stats(all_stats)
        out.update(policy_lag_mean=float(np.mean(lags)), policy_lag_max=int(max(lags)), weights_version=self.version)
        return out




#: Seconds the driver waits for an actor result already on its way before taking a learner step instead.
POLL_S = 1e-4


class AsyncReplay(Execution):
    """Actors sample continuously and return rows with initial priorities; the driver sends them to replay shards
    (stateful workers) and runs the learner free of the actors: a learner turn pulls prioritized minibatches from
    a shard, learns on each and sends the new priorities back (unirl.execution.async_replay has the data flow).

    The actors (unirl.execution.async_replay.ReplayActor) explore with `exploration(config, spec)`, turn batches
    into rows with `rows(batch, config)` and give them initial priorities with `priorities(policy, rows, config)`
    (module-level functions: they travel by reference). Config keys read: num_replay_shards, replay_buffer_capacity (per shard), replay_batch_size,
    replay_batches_per_request, learning_starts, training_intensity, min_training_intensity,
    weight_sync_period, actor_batches_per_iteration, prioritized_replay_* and arrival_schedule.

    Replayable: the schedule records an actor id for each result consumed and num_workers (the learner's
    id) for each learner turn."""

    def __init__(self, exploration: Callable, rows: Callable, priorities: Callable, priority_stat: str = "td_error"):
        self.actor_parts = _ar.ActorParts(exploration, rows, priorities)
        self.priority_stat = priority_stat

    def start(self, algo):
        c = algo.config
        shard_args = [(j, c.seed, c.replay_buffer_capacity, c.prioritized_replay_alpha, c.prioritized_replay_eps)
                      for j in range(c.num_replay_shards)]
        actor_args = [(s, c, self.actor_parts) for s in algo.worker_specs()]
        driver = _ar.AsyncReplay(algo.backend, _ar.ReplayActor, actor_args, _ar.ReplayShard,
                                 shard_args, replay_schedule=c.arrival_schedule, timeout=c.worker_timeout_s or None)
        self.grad_steps = 0
        self.learner_turns = 0  # learner turns so far (grad_steps when replay_batches_per_request is 1)
        self.rows_in_shards = 0
        self.results_since_step = 0  # actor results consumed since the last learner step (free-running only)
        driver.start(algo.policy.get_flat_weights(), 0)
        return driver

    beta = SyncReplay.beta

    @property
    def learner_id(self) -> int:
        """The learner's id in the arrival schedule (after the actors' 0 .. num_workers - 1)."""
        return len(self.driver.actors)

    def grad_steps_due(self) -> int:
        """Learner steps allowed now: the training_intensity cap minus the steps taken (0 before learning starts)."""
        a, c = self.algo, self.algo.config
        if a.timesteps_total < c.learning_starts or self.driver.batches_consumed < self.driver.num_shards:
            return 0
        return max(0, int(c.training_intensity * (a.timesteps_total - c.learning_starts)) - self.grad_steps)

    def below_min_intensity(self) -> bool:
        a, c = self.algo, self.algo.config
        return self.grad_steps < int(c.min_training_intensity * (a.timesteps_total - c.learning_starts))

    def learner_turn(self, hp) -> tuple[dict, int]:
        """(stats of the last step, steps taken): a learner turn, one entry in the schedule. It pulls up to
        replay_batches_per_request minibatches (as many as are due) from a shard in one request (the next
        turn's requested ahead while more steps are due), takes a gradient step on each and sends their
        new priorities back to that shard in one message."""
        a, c, p = self.algo, self.algo.config, self.driver
        p.schedule.recorded.append(self.learner_id)
        due = self.grad_steps_due()
        count = max(1, min(c.replay_batches_per_request, due))
        shard, batches = p.replay(self.learner_turns, c.replay_batch_size, self.beta(), count,
                                  prefetch=min(c.replay_batches_per_request, due - count))
        updates = []
        key = self.priority_stat
        for rows, idx, weights in batches:
            rows[WEIGHTS] = weights
            stats = a.learn_minibatch(rows, hp, self.grad_steps)
            updates.append((idx, a.policy.stats_numpy({key: stats[key]})[key]))
            self.grad_steps += 1
        p.update_priorities(shard, updates)
        self.learner_turns += 1
        return stats, count

    def learner_turn_now(self) -> bool:
        """Whether the driver's next move is a learner step (else it consumes an actor result).

        Replaying: what the recorded run did. Free-running: a step when one is allowed (learning has
        started and the steps stay within training_intensity per env step) and no actor result is
        waiting, or every actor has delivered once since the last step (so a fast fleet cannot starve
        the learner), or the learner is below min_training_intensity; on a backend whose workers run in
        the driver, whenever one is allowed."""
        a, p = self.algo, self.driver
        if p.schedule.replaying:
            p.replay_due_restarts(self.grad_steps, a.policy.get_flat_weights)
            step = len(p.schedule.recorded)
            if step >= len(p.schedule.replay):
                raise UnirlError(f"the replayed schedule ends after {len(p.schedule.replay)} entries; "
                                 "this run asks for more (was it recorded with a longer stop condition?).")
            return p.schedule.replay[step] == self.learner_id
        if self.grad_steps_due() <= 0:
            return False
        if a.backend.runs_in_driver or self.results_since_step >= len(p.actors) or self.below_min_intensity():
            return True
        ready, _ = a.backend.wait(list(p.pending.values()), num_returns=1, timeout=POLL_S)
        return not ready

    def training_step(self) -> dict:
        a, c, p = self.algo, self.algo.config, self.driver
        count = c.actor_batches_per_iteration or c.num_workers
        hp = a.policy.hp_tensors(a.hyperparameters())
        staleness = []
        stats = None
        consumed = learner_steps = 0
        while consumed < count:
            if self.learner_turn_now():
                stats, steps = self.learner_turn(hp)
                self.results_since_step = 0
                learner_steps += steps
                continue
            _, (summary, rows, prios), stale = p.consume(self.grad_steps, a.policy.get_flat_weights,
                                                         c.weight_sync_period)
            consumed += 1
            self.results_since_step += 1
            staleness.append(stale)
            a.record_batch(summary)
            p.add_to_shard(rows, prios)
            self.rows_in_shards += len(prios)
            a.after_samples()
        p.flush()
        a.policy.finish_learning()
        out = {}
        if stats is not None:
            out.update(a.policy.stats_numpy({k: v for k, v in stats.items() if k != self.priority_stat}))
        replayed = self.grad_steps * c.replay_batch_size
        out.update({"grad_steps": self.grad_steps, "grad_steps_this_iter": learner_steps,
                    "weight_syncs": p.weight_syncs,
                    "replay_ratio": replayed / max(a.timesteps_total, 1),
                    "weight_staleness_mean": float(np.mean(staleness)),
                    "weight_staleness_mean_total": p.staleness_sum / max(p.batches_consumed, 1),
                    "replay_rows": min(self.rows_in_shards, c.replay_buffer_capacity * c.num_replay_shards),
                    "beta": self.beta(), "lr": a.current_lr()})
        return out

    # -- checkpoints: shard buffers, the recorded schedule, the pattern's counters ----------------
    def get_state(self):
        arrays, shard_meta = {}, []
        for j, (a, meta) in enumerate(self.driver.shard_states()):
            arrays.update(prefixed(a, f"replay/shard{j}"))
            shard_meta.append(meta)
        p = self.driver
        return arrays, {"replay_shards": shard_meta, "grad_steps": self.grad_steps, "learner_turns": self.learner_turns,
                        "arrival_schedule": list(p.schedule.recorded), "batches_consumed": p.batches_consumed,
                        "weight_syncs": p.weight_syncs, "staleness_sum": p.staleness_sum,
                        "rows_in_shards": self.rows_in_shards}

    def set_state(self, arrays, state) -> None:
        p = self.driver
        if "replay_shards" in state:
            p.set_shard_states([(unprefixed(arrays, f"replay/shard{j}"), meta)
                                for j, meta in enumerate(state["replay_shards"])])
        self.grad_steps = int(state.get("grad_steps", 0))
        self.learner_turns = int(state.get("learner_turns", self.grad_steps))
        self.rows_in_shards = int(state.get("rows_in_shards", 0))
        p.batches_consumed = int(state.get("batches_consumed", 0))
        p.weight_syncs = int(state.get("weight_syncs", 0))
        p.staleness_sum = int(state.get("staleness_sum", 0))
        p.schedule.recorded = [int(w) for w in state.get("arrival_schedule", [])]


class PopulationEvaluation(Execution):
    """Broadcast the weights (and the observation filter's snapshot), hand out ranges of global perturbation
    indices, gather returns in perturbation order (unirl.execution.population); the algorithm turns them into
    a gradient estimate (`estimate_gradient(result, noise_offsets)`) and an update (`learn({"gradient": g}, hp)`).

    The algorithm also provides `perturbations_per_iteration()`, `noise_stdev()`, `filter_snapshot()` and
    `use_filter`; config keys read: noise_table_size, filter_clip, worker_forward, max_episode_steps, chunk_size."""

    driver_attr = "population"

    def start(self, algo):
        from unirl.execution import population as _pop

        c = algo.config
        self.perturbations_total = 0
        self.last_result = None
        spec = _pop.PopulationSpec(algo.acting_policy, c.env, dict(c.env_config), c.seed, c.noise_table_size,
                                   observation_filter=algo.use_filter, filter_clip=c.filter_clip,
                                   forward=c.worker_forward, max_episode_steps=c.max_episode_steps)
        return _pop.PopulationEvaluation(algo.backend, [spec] * c.num_workers, chunk_size=c.chunk_size)

    def training_step(self) -> dict:
        from unirl.execution.population import noise_offsets

        a, c = self.algo, self.algo.config
        n = a.perturbations_per_iteration()
        start = self.perturbations_total
        theta = a.policy.get_flat_weights()
        result = self.driver.evaluate(theta, a.filter_snapshot(), start, n, a.noise_stdev())
        self.perturbations_total += n
        offsets = noise_offsets(c.seed, start, n, c.noise_table_size, a.policy.layout.size)
        grad, stats = a.estimate_gradient(result, offsets)
        stats.update(a.learn({"gradient": grad}, a.hyperparameters()))
        self.last_result = result
        a.after_samples()
        # each perturbation's two rollouts are episodes, (+, -) in perturbation order
        a.record_episodes(result["returns"].ravel(), result["lengths"].ravel())
        stats.update({"population_return_mean": float(result["returns"].mean()),
                      "population_return_max": float(result["returns"].max()),
                      "perturbations_total": self.perturbations_total})
        return stats

    def get_state(self):
        return {}, {"perturbations_total": self.perturbations_total}

    def set_state(self, arrays, state) -> None:
        self.perturbations_total = int(state.get("perturbations_total", 0))


class SelfPlay(Execution):
    """Self-play (AlphaZero): self-play actors (unirl.execution.self_play) play whole games by search; their rows
    (in game order) go into a replay buffer, and the learner takes its owed gradient steps on uniformly replayed
    minibatches (sample_reuse x rows played / replay_batch_size steps, in total).

    Synchronous (`self_play_mode` "sync"): each iteration broadcasts the weights and search settings, hands out the
    iteration's game indices in chunks (unirl.execution.indexed) and joins the rows in game order: bit-identical.
    Free-running ("async"): each actor keeps two chunks of games queued, each request carrying the weights and
    settings of its moment and the next game indices; chunks are consumed as they arrive (unirl.execution.
    async_samples), the learner steps after each, and the actor is sent the next chunk: replayable from the recorded
    arrival schedule (`arrival_schedule`).

    The algorithm provides `search_settings()` and `self_play_spec()`; config keys read: self_play_mode,
    games_per_iteration, games_per_chunk, replay_buffer_capacity, replay_batch_size, sample_reuse,
    arrival_schedule, worker_timeout_s."""

    driver_attr = "self_play"
    #: Chunks each free-running actor keeps queued.
    IN_FLIGHT = 2

    def start(self, algo):
        from unirl.execution.self_play import SelfPlayWorker
        from unirl.replay import ReplayBuffer

        c = algo.config
        self.buffer = algo.buffer = ReplayBuffer(c.replay_buffer_capacity)
        self.games_total = self.rows_total = self.grad_steps = 0
        self.next_game = 0  # free-running: the first game index of the next request
        self.version = 0  # free-running: learner updates so far (the weights version a request carries)
        self.chunk = c.games_per_chunk or -(-c.games_per_iteration // c.num_workers)
        specs = [algo.self_play_spec()] * c.num_workers
        if c.self_play_mode == "async":
            driver = _as.AsyncSamples(algo.backend, specs, self.IN_FLIGHT, replay=c.arrival_schedule,
                                      timeout=c.worker_timeout_s or None, worker_cls=SelfPlayWorker)
            driver.replacement_args = self._request_args
            return driver
        from unirl.execution.indexed import IndexedTasks

        return IndexedTasks(algo.backend, SelfPlayWorker, [(s,) for s in specs], chunk_size=self.chunk)

    def grad_steps_due(self) -> int:
        c = self.algo.config
        return max(0, int(c.sample_reuse * self.rows_total) // c.replay_batch_size - self.grad_steps)

    def consume(self, joined: dict) -> dict:
        """Count the games, add their rows to the buffer, take the learner's owed steps; the learner's stats."""
        from unirl.execution.self_play import OBS, PI, Z

        a, c = self.algo, self.algo.config
        self.games_total += len(joined["lengths"])
        a.record_episodes(joined["returns"], joined["lengths"])
        rows = {k: joined[k] for k in (OBS, PI, Z)}
        self.buffer.add(rows)
        self.rows_total += len(rows[Z])
        due = self.grad_steps_due()
        if not due:
            return {}
        hp = a.policy.hp_tensors(a.hyperparameters())
        minibatches = [self.buffer.sample(c.replay_batch_size, a.learner_rng)[0] for _ in range(due)]
        stats = a.learn_minibatches(minibatches, hp, self.grad_steps)
        a.policy.finish_learning()
        self.grad_steps += due
        self.version += 1
        return a.policy.stats_numpy(stats)

    # -- free-running ------------------------------------------------------------------------------
    def _request_args(self, wid: int) -> tuple:
        """(weights, version, the request's keywords): the next chunk of games with the current weights."""
        a = self.algo
        start, self.next_game = self.next_game, self.next_game + self.chunk
        return a.policy.get_flat_weights(), self.version, {"start": start, "stop": start + self.chunk,
                                                           "settings": a.search_settings()}

    def _fill(self, wid: int) -> None:
        while len(self.driver.in_flight[wid]) < self.IN_FLIGHT:
            weights, version, kwargs = self._request_args(wid)
            self.driver.request(wid, weights, version, **kwargs)

    def _async_step(self) -> tuple[dict, list, dict]:
        c = self.algo.config
        for wid in self.driver.in_flight:
            self._fill(wid)
        played, lags, stats, results = 0, [], {}, []
        while played < c.games_per_iteration:
            result = self.driver.next()
            lags.append(self.version - result.version)
            stats = self.consume(result.value) or stats
            played += len(result.value["lengths"])
            results.append(result.value)
            self._fill(result.worker_id)
        stats.update(policy_lag_mean=float(np.mean(lags)), policy_lag_max=int(max(lags)),
                     weights_version=self.version)
        return stats, results

    def training_step(self) -> dict:
        a, c = self.algo, self.algo.config
        if c.self_play_mode == "async":
            out, results = self._async_step()
        else:
            self.driver.broadcast("set_weights", a.policy.get_flat_weights(), a.search_settings())
            results = self.driver.run("play", self.games_total, c.games_per_iteration)
            out = self.consume({k: np.concatenate([r[k] for r in results]) for k in results[0]})
        a.after_samples()
        returns = np.concatenate([r["returns"] for r in results])
        lengths = np.concatenate([r["lengths"] for r in results])
        out.update({"games_total": self.games_total, "grad_steps": self.grad_steps, "replay_size": len(self.buffer),
                    "first_player_return_mean": float(returns.mean()), "game_length_mean": float(lengths.mean()),
                    "lr": a.current_lr()})
        return out

    def get_state(self):
        buf_arrays, buf_meta = self.buffer.get_state()
        state = {"replay": buf_meta, "games_total": self.games_total, "rows_total": self.rows_total,
                 "grad_steps": self.grad_steps, "next_game": self.next_game, "weights_version": self.version}
        if hasattr(self.driver, "schedule"):
            state["arrival_schedule"] = list(self.driver.schedule.recorded)
        return prefixed(buf_arrays, "replay"), state

    def set_state(self, arrays, state) -> None:
        if "replay" in state:
            self.buffer.set_state(unprefixed(arrays, "replay"), state["replay"])
        self.games_total = int(state.get("games_total", 0))
        self.rows_total = int(state.get("rows_total", 0))
        self.grad_steps = int(state.get("grad_steps", 0))
        self.next_game = int(state.get("next_game", 0))
        self.version = int(state.get("weights_version", 0))
