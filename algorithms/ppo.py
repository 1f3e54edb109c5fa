"""PPO (Schulman et al. 2017): clipped surrogate, GAE, value loss, entropy bonus, minibatch epochs."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from unirl import sample_batch as sb
from unirl.algorithm import Algorithm
from unirl.config import AlgorithmConfig
from unirl.conformance_spec import ConformanceSpec
from unirl.errors import UnirlError
from unirl.execution import loops
from unirl.models import train_outputs
from unirl.ops import numpy_ops
from unirl.postprocessing import actor_critic_rows


@dataclass
class PPOConfig(AlgorithmConfig):
    """PPO's options (plus those of every algorithm)."""

    # The defaults are tuned for classic-control tasks (CartPole solves in about 25k steps);
    # longer-horizon tasks want gamma 0.99 and gae_lambda 0.95.
    #: Discount factor.
    gamma: float = 0.98
    #: Adam learning rate at the start.
    lr: float = 3e-3
    #: Decay lr linearly to lr_final over the first 100k env steps (keeps late training stable).
    lr_decay_timesteps: int = 100_000
    #: The learning rate reached after lr_decay_timesteps.
    lr_final: float = 3e-4
    #: GAE lambda.
    gae_lambda: float = 0.8
    #: Surrogate clip range epsilon.
    clip_param: float = 0.2
    #: Weight of the value loss.
    vf_loss_coeff: float = 0.5
    #: Weight of the entropy bonus.
    entropy_coeff: float = 0.0
    #: Passes over each train batch.
    num_epochs: int = 6
    #: Rows per gradient step (train_batch_size must be a multiple).
    minibatch_size: int = 128
    #: Normalize advantages within each minibatch.
    normalize_advantages: bool = True

    def validate(self) -> None:
        super().validate()
        if self.minibatch_size < 1 or self.train_batch_size % self.minibatch_size:
            raise UnirlError(f"minibatch_size {self.minibatch_size} must divide train_batch_size {self.train_batch_size}.")
        if self.num_epochs < 1:
            raise UnirlError(f"config key `num_epochs` must be at least 1, got {self.num_epochs}.")
        if not 0.0 <= self.gae_lambda <= 1.0:
            raise UnirlError(f"config key `gae_lambda` must lie in [0, 1], got {self.gae_lambda}.")
        if self.clip_param <= 0:
            raise UnirlError(f"config key `clip_param` must be positive, got {self.clip_param}.")


def ppo_loss(ops, module, params, batch, hp):
    """The PPO loss on one minibatch, written once on the neutral ops."""
    dist = module.dist
    out = train_outputs(ops, module, params, batch)
    inputs, values = out["dist_inputs"], out["values"]
    logp = dist.logp(ops, inputs, batch[sb.ACTIONS])
    ratio = ops.exp(logp - batch[sb.LOGP])
    adv = batch[sb.ADVANTAGES]
    if "normalize_advantages" in hp:
        centered = adv - ops.mean(adv)
        adv = centered / (ops.sqrt(ops.mean(ops.square(centered))) + 1e-8)
    clip = hp["clip_param"]
    surrogate = ops.minimum(ratio * adv, ops.clip(ratio, 1.0 - clip, 1.0 + clip) * adv)
    policy_loss = -ops.mean(surrogate)
    vf_loss = ops.mean(ops.square(values - batch[sb.VALUE_TARGETS]))
    entropy = ops.mean(dist.entropy(ops, inputs))
    loss = policy_loss + hp["vf_loss_coeff"] * vf_loss - hp["entropy_coeff"] * entropy
    log_ratio = logp - batch[sb.LOGP]
    stats = {
        "policy_loss": policy_loss,
        "vf_loss": vf_loss,
        "entropy": entropy,
        "kl": ops.mean(ops.stop_gradient((ratio - 1.0) - log_ratio)),
        "clip_fraction": ops.mean(ops.cast_float(ops.abs(ratio - 1.0) > clip)),
    }
    return loss, stats


class PPO(Algorithm):
    name = "PPO"
    config_class = PPOConfig
    module_kind = "actor_critic"
    supports_recurrent = True
    loss = staticmethod(ppo_loss)
    conformance = ConformanceSpec(
        run_config={"env": "CartPole-v1", "total_envs": 12, "train_batch_size": 96, "minibatch_size": 48,
                    "num_epochs": 2},
        curve_config={"env": "CartPole-v1", "total_envs": 4, "train_batch_size": 128, "minibatch_size": 64,
                      "num_epochs": 4},
        learning={"config": {"env": "CartPole-v1"}, "score": 475.0, "budget": 100_000, "eval_episodes": 20},
        variants={
            # Continuous actions: the diagonal Gaussian (sampled from the per-env uniforms, clipped for the env).
            "pendulum": ConformanceSpec(
                run_config={"env": "Pendulum-v1", "total_envs": 12, "train_batch_size": 96, "minibatch_size": 48,
                            "num_epochs": 2, "gamma": 0.9, "gae_lambda": 0.95, "lr": 1e-3},
                # rl-zoo's Pendulum PPO without gSDE (benchmarks/envs.py): about 65k steps to -250 here.
                learning={"config": {"env": "Pendulum-v1", "num_envs_per_worker": 4, "train_batch_size": 4096,
                                     "minibatch_size": 64, "num_epochs": 10, "gamma": 0.9, "gae_lambda": 0.95,
                                     "lr": 1e-3, "lr_decay_timesteps": 0, "entropy_coeff": 0.0, "grad_clip": 0.5,
                                     "model": {"hidden_sizes": [64, 64], "activation": "tanh"}},
                          "score": -250.0, "budget": 200_000, "eval_episodes": 20},
                quick_iterations=2),
            # Memory: an LSTM after the torso on CartPole with the velocities hidden (unirl.recurrent); each env's
            # state travels with the batch, sequences of 4 steps with episode starts inside them.
            "lstm": ConformanceSpec(
                run_config={"env": "unirl/StatelessCartPole-v1", "total_envs": 12, "train_batch_size": 96,
                            "minibatch_size": 48, "num_epochs": 2,
                            "model": {"lstm_cell_size": 16, "hidden_sizes": [16], "max_seq_len": 4}},
                quick_iterations=3),
            # Image observations: MinAtar frames (uint8, 10x10x4) through the small CNN.
            # multi-agent: a cooperative parallel env, three agents sharing one policy (unirl.multi_agent)
            "spread": ConformanceSpec(
                run_config={"env": "mpe2.simple_spread_v3", "total_envs": 12, "train_batch_size": 96,
                            "minibatch_size": 48, "num_epochs": 2},
                quick_iterations=4),
            "minatar": ConformanceSpec(
                run_config={"env": "MinAtar/Breakout-v1", "total_envs": 12, "train_batch_size": 96,
                            "minibatch_size": 48, "num_epochs": 1},
                quick_iterations=2),
        },
    )

    execution = loops.SyncSamples()
    #: The rows' columns the loss reads.
    train_columns = (sb.OBS, sb.ACTIONS, sb.LOGP, sb.ADVANTAGES, sb.VALUE_TARGETS)

    def postprocess(self, batch: sb.SampleBatch) -> dict[str, np.ndarray]:
        """Behaviour log-probs, values and GAE for a joined batch, as flat rows [T * N].

        Computed here, on the learner, over the joined batch: the result is a function of the
        trajectories only, whatever the split of envs over workers.
        """
        rows = actor_critic_rows(self.policy, batch, self.config.gamma, self.config.gae_lambda)
        inputs = rows.pop("dist_inputs")
        rows[sb.LOGP] = self.policy.dist.logp(numpy_ops, inputs, rows[sb.ACTIONS]).astype(np.float32)
        return rows

    def hyperparameters(self) -> dict[str, float]:
        c = self.config
        hp = {"lr": self.current_lr(), "clip_param": c.clip_param, "vf_loss_coeff": c.vf_loss_coeff,
              "entropy_coeff": c.entropy_coeff}
        if c.normalize_advantages:
            hp["normalize_advantages"] = 1.0
        return hp

    def learn(self, rows: dict, hp: dict) -> dict:
        """`num_epochs` passes of minibatch SGD over the batch."""
        stats = self.policy.learn_epochs(sb.train_columns(rows, self.train_columns), hp, self.config.num_epochs,
                                         self.config.minibatch_size, self.learner_rng)
        return self.policy.stats_numpy(stats)
