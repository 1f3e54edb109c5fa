"""IMPALA (Espeholt et al. 2018) on the async-samples pattern: actors sample with stale weights, the learner corrects with V-trace.

Actors return fragments with the distribution inputs they acted with; the learner consumes
fragments as they arrive until it has `train_batch_size` steps, computes the current policy's
log-probabilities and values over them (on the learner, so the numbers depend on the
trajectories only, never on how envs are split), applies V-trace (rho-bar and c-bar clipping,
unirl.vtrace) and takes one gradient step on the shared actor-critic loss with the V-trace
policy-gradient advantages and value targets. Fresh weights then go to the actors that returned.

Free-running runs are replayable: `get_state()[1]["arrival_schedule"]` is the list of actor
ids in the order their fragments were consumed, and the config key `arrival_schedule` replays
it on any backend, bit for bit. Each result reports the policy lag: learner steps between the
weights a fragment was sampled with and the step that learned on it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from unirl import recurrent as rnn
from unirl import sample_batch as sb
from unirl.algorithm import Algorithm
from unirl.algorithms.a2c import actor_critic_loss, loss_hyperparameters
from unirl.config import FragmentConfig
from unirl.conformance_spec import REPLAYABLE, ConformanceSpec
from unirl.errors import UnirlError
from unirl.execution import loops
from unirl.ops import numpy_ops
from unirl.postprocessing import next_values
from unirl.vtrace import vtrace


@dataclass
class IMPALAConfig(FragmentConfig):
    """IMPALA's options (plus those of every asynchronous algorithm)."""

    # Defaults tuned for classic-control tasks: 2 actors x 8 envs x 8 steps, 64 steps per learner step.
    #: Actors (rollout workers).
    num_workers: int = 2
    #: Env steps per learner step (a multiple of one actor's fragment).
    train_batch_size: int = 64
    #: Learner steps per training iteration.
    learner_steps_per_iteration: int = 2
    #: Sample requests each actor keeps queued, so actors sample while the learner learns. 0 (the
    #: default): enough for the actors' queues to hold two train batches, and at least 2 per actor
    #: (2 for the defaults). A queue shorter than a train batch makes the learner top it up with its
    #: current weights: on-policy data (policy lag 0) and actors idle while it learns.
    max_requests_in_flight_per_worker: int = 0
    #: Discount factor.
    gamma: float = 0.99
    #: Adam learning rate.
    lr: float = 1e-3
    #: V-trace rho-bar: clip of the importance weights in the TD errors and policy gradient.
    vtrace_clip_rho_threshold: float = 1.0
    #: V-trace c-bar: clip of the importance weights in the trace.
    vtrace_clip_c_threshold: float = 1.0
    #: Weight of the value loss.
    vf_loss_coeff: float = 0.5
    #: Weight of the entropy bonus.
    entropy_coeff: float = 0.0

    def requests_in_flight_per_worker(self) -> int:
        """max_requests_in_flight_per_worker, with 0 resolved: two train batches over the actors, at least 2."""
        if self.max_requests_in_flight_per_worker:
            return self.max_requests_in_flight_per_worker
        return max(2, -(-2 * self.train_batch_size // (self.num_workers * self.fragment_size)))

    def validate(self) -> None:
        super().validate()
        if self.learner_steps_per_iteration < 1:
            raise UnirlError(f"config key `learner_steps_per_iteration` must be at least 1, "
                             f"got {self.learner_steps_per_iteration}.")
        if self.max_requests_in_flight_per_worker < 0:
            raise UnirlError("config key `max_requests_in_flight_per_worker` must be at least 1, or 0 for enough "
                             f"to queue two train batches; got {self.max_requests_in_flight_per_worker}.")
        if self.vtrace_clip_rho_threshold <= 0 or self.vtrace_clip_c_threshold <= 0:
            raise UnirlError("config keys `vtrace_clip_rho_threshold` and `vtrace_clip_c_threshold` must be positive.")


class IMPALA(Algorithm):
    name = "IMPALA"
    config_class = IMPALAConfig
    module_kind = "actor_critic"
    supports_recurrent = True
    loss = staticmethod(actor_critic_loss)
    conformance = ConformanceSpec(
        run_config={"env": "CartPole-v1", "total_envs": 12, "rollout_fragment_length": 4, "train_batch_size": 48},
        curve_config={"env": "CartPole-v1", "total_envs": 16, "rollout_fragment_length": 8, "train_batch_size": 128},
        learning={"config": {"env": "CartPole-v1"}, "score": 475.0, "budget": 500_000, "eval_episodes": 20},
        reproducibility=REPLAYABLE,
        levels=(1, 3, 4, 5),
        notes="level 3 replays the local run's arrival schedule at the same worker count",
    )

    execution = loops.AsyncSamples()
    #: The rows' columns the loss reads (postprocess adds the log importance ratios and behaviour log-probs).
    train_columns = (sb.OBS, sb.ACTIONS, sb.ADVANTAGES, sb.VALUE_TARGETS)

    def hyperparameters(self) -> dict[str, float]:
        return loss_hyperparameters(self.config, self.current_lr())

    def postprocess(self, fragments: list[sb.SampleBatch]) -> dict[str, np.ndarray]:
        """Rows (obs, actions, V-trace advantages and targets) for fragments in consumption order.

        One learner forward pass over every fragment's observations, bootstrap observations and
        truncated episodes' final observations gives the target policy's inputs and the values.
        """
        c = self.config
        module = self.policy.module
        recurrent = getattr(module, "recurrent", False)
        if not recurrent:  # one pass for every fragment
            parts, sizes = [], []
            for b in fragments:
                obs = b[sb.OBS].reshape((b.count,) + b[sb.OBS].shape[2:])
                parts += [obs, b[sb.BOOTSTRAP_OBS], b[sb.TRUNC_OBS]]
                sizes.append((b.count, b.num_envs, len(b[sb.TRUNC_INDEX])))
            out = self.policy.forward(np.concatenate(parts, axis=0))
            inputs_all, values_all = out["dist_inputs"], out["values"]
        rows = []
        offset = 0
        dist = self.policy.dist
        for i, b in enumerate(fragments):
            T, envs, n = b.num_steps, b.num_envs, b.count
            if recurrent:  # each env's steps replayed from the state stored with the fragment (unirl.recurrent)
                inputs, values, boot, trunc, states, resets = rnn.replay_outputs(self.policy, b)
            else:
                k = sizes[i][2]
                inputs, values = inputs_all[offset:offset + n], values_all[offset:offset + n]
                boot = values_all[offset + n:offset + n + envs]
                trunc = values_all[offset + n + envs:offset + n + envs + k]
                offset += n + envs + k
            v = values.reshape(T, envs)
            nxt = next_values(b, v, boot, trunc)
            actions = b[sb.ACTIONS].reshape((n,) + b[sb.ACTIONS].shape[2:])
            target_logp = dist.logp(numpy_ops, inputs, actions)
            behaviour = b[sb.BEHAVIOUR_INPUTS].reshape(n, -1)
            behaviour_logp = dist.logp(numpy_ops, behaviour, actions)
            log_rhos = (target_logp - behaviour_logp).astype(np.float32).reshape(T, envs)
            dones = b[sb.TERMINATEDS] | b[sb.TRUNCATEDS]
            vs, pg_adv = vtrace(log_rhos, b[sb.REWARDS], v, nxt, dones, c.gamma,
                                c.vtrace_clip_rho_threshold, c.vtrace_clip_c_threshold)
            fragment = {sb.OBS: b[sb.OBS].reshape((n,) + b[sb.OBS].shape[2:]), sb.ACTIONS: actions,
                        sb.ADVANTAGES: pg_adv.reshape(-1), sb.VALUE_TARGETS: vs.reshape(-1),
                        "log_rhos": log_rhos.reshape(-1), sb.LOGP: behaviour_logp.astype(np.float32)}
            if recurrent:
                fragment = rnn.to_sequences(fragment, states, resets, rnn.sequence_length(module, T))
            rows.append(fragment)
        return {key: np.concatenate([r[key] for r in rows], axis=0) for key in rows[0]}

    def learn(self, rows: dict, hp: dict) -> dict:
        stats = super().learn(sb.train_columns(rows, self.train_columns), hp)
        stats["mean_rho"] = float(np.mean(np.exp(rows["log_rhos"])))
        return stats
