"""Execution patterns (the seed's "policy optimizers"), each written once against the Backend protocol.

An algorithm declares one (`execution = loops.AsyncGradients(...)`, unirl.execution.loops): the
pattern owns the driver loop, the workers and the data flow, the algorithm owns the math and
plugs it in through hooks. The modules below are the patterns' worker drivers; loops.py holds
the loops that drive them. Every pattern uses only `spawn(worker_cls, args) -> handles`, `call(handle, method, ...)
-> future`, `wait(futures, k, timeout)`, `get(futures)` (in the order asked) and `shutdown()`,
so it runs unchanged on every backend.

| pattern | module | data flow | reproducibility |
|---|---|---|---|
| SyncSamples | sync_samples | broadcast weights, gather fragments in env order | bit-identical |
| SyncReplay | replay | as above, rows into a replay buffer in env order, learner replays | bit-identical |
| AsyncReplay | async_replay | actors -> replay shards (stateful workers) with initial priorities; learner pulls prioritized batches, priorities back | replayable |
| PopulationEvaluation | population | broadcast weights (and filter stats), hand out perturbation index ranges, gather returns in perturbation order | bit-identical |
| SelfPlay | self_play, indexed | broadcast weights and search settings, hand out game index ranges to self-play actors, rows in game order into a replay buffer (free-running: chunks as they arrive) | bit-identical (free-running: replayable) |
| AsyncGradients | async_gradients | workers sample and compute gradients; driver applies each as it arrives, new weights to that worker | replayable |
| AsyncSamples | async_samples | actors return fragments with behaviour logits (stale weights); learner consumes as they arrive | replayable |
| (family modules add sync replay, async gradients, async samples, population evaluation) | | | |

Asynchronous patterns consume results through an `ArrivalSchedule` (schedule.py): free-running
it records which worker's result the driver consumed at each step; given that record, it makes
any backend consume them in the same order, so an asynchronous run replays bit for bit.
"""
from unirl.execution.population import PopulationEvaluation
from unirl.execution.async_replay import AsyncReplay
from unirl.execution.replay import SyncReplay
from unirl.execution.async_gradients import AsyncGradients, GradientWorker
from unirl.execution.async_samples import AsyncSamples
from unirl.execution.schedule import ArrivalSchedule
from unirl.execution.sync_samples import SyncSamples, worker_specs
from unirl.execution import loops

__all__ = ["ArrivalSchedule", "AsyncReplay", "AsyncGradients", "AsyncSamples", "GradientWorker", "PopulationEvaluation", "SyncReplay", "SyncSamples", "loops", "worker_specs"]
