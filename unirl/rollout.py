"""RolloutWorker: steps a Gymnasium vector env with a policy copy and returns SampleBatches.

A worker hosts a consecutive range of global env indices; seeds and action noise are keyed by
those indices, so the numbers do not depend on how envs are split over workers.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from unirl import sample_batch as sb
from unirl import seeding
from unirl.env import make_vector_env
from unirl.policy import PolicySpec
from unirl.sample_batch import SampleBatch

logger = logging.getLogger("unirl.worker")


@dataclass
class WorkerSpec:
    """Everything a worker process needs to build itself (plain data: it travels to other processes)."""

    policy: PolicySpec
    env: str
    env_config: dict
    seed: int
    worker_index: int
    env_start: int
    num_envs: int
    rollout_length: int
    #: Also return each step's distribution inputs (column BEHAVIOUR_INPUTS), for off-policy correction.
    record_dist_inputs: bool = False
    #: The env's Gymnasium registration, cloudpickled on the driver (unirl.env.env_payload), so an env
    #: registered in the user's script (or given as a class or function) exists in worker processes too.
    env_spec: bytes | None = None

    def __post_init__(self):
        if self.env_spec is None:
            from unirl.env import env_payload

            self.env_spec = env_payload(self.env)

    @property
    def env_indices(self) -> range:
        return range(self.env_start, self.env_start + self.num_envs)


class RolloutWorker:
    """sample(weights, **explore) -> SampleBatch of `rollout_length` steps from each of this worker's envs."""

    def __init__(self, spec: WorkerSpec):
        self.spec = spec
        self.policy = spec.policy.build()
        from unirl.env import ensure_env_registered

        ensure_env_registered(getattr(spec, "env_spec", None))
        self.envs = make_vector_env(spec.env, spec.num_envs, spec.env_config)
        seeds = [seeding.env_reset_seed(spec.seed, i) for i in spec.env_indices]
        self.obs, _ = self.envs.reset(seed=seeds)
        self.noise = seeding.EnvNoise(spec.seed, spec.env_indices, per_step=self.policy.dist.noise_per_step)
        self.ep_return = np.zeros(spec.num_envs, np.float64)
        self.ep_length = np.zeros(spec.num_envs, np.int64)
        self.obs_shape = self.envs.single_observation_space.shape
        # Frames (uint8, bool) travel as uint8, a quarter of float32; the module casts them to float.
        self.obs_dtype = (np.uint8 if np.dtype(self.envs.single_observation_space.dtype) in (np.uint8, np.bool_)
                          else np.float32)
        self.act_shape = self.policy.dist.action_shape
        #: Each env's acting state (Policy.act: a plan to warm-start from, say), zeros at episode starts; None if
        #: the module keeps none.
        shape = getattr(self.policy.module, "acting_state_shape", None)
        self.act_state = None if shape is None else np.zeros((spec.num_envs,) + tuple(shape), np.float32)
        self.act_dtype = self.policy.dist.action_dtype
        logger.debug("worker %d hosts envs %d..%d", spec.worker_index, spec.env_start,
                     spec.env_start + spec.num_envs - 1)

    @staticmethod
    def preload_modules(spec: WorkerSpec) -> list[str]:
        """Modules a process backend may import before building workers (the framework adapter), so a
        template process can fork workers that start without importing the framework again."""
        return spec.policy.preload_modules()

    def worker_id(self) -> int:
        return self.spec.worker_index

    def set_weights(self, flat_weights: np.ndarray) -> None:
        self.policy.set_flat_weights(flat_weights)

    def sample(self, flat_weights: np.ndarray | None = None, **explore) -> SampleBatch:
        """`rollout_length` steps of every env, acting with `flat_weights` (if given) and the
        exploration settings `explore` (e.g. epsilon), which go to the distribution."""
        if flat_weights is not None:
            self.policy.set_flat_weights(flat_weights)
        self.policy.dist.check_exploration(explore)
        T, N = self.spec.rollout_length, self.spec.num_envs
        obs = np.empty((T, N) + self.obs_shape, self.obs_dtype)
        actions = np.empty((T, N) + self.act_shape, self.act_dtype)
        rewards = np.empty((T, N), np.float32)
        terms = np.empty((T, N), bool)
        truncs = np.empty((T, N), bool)
        dist_inputs = np.empty((T, N, self.policy.dist.num_inputs), np.float32) if self.spec.record_dist_inputs else None
        trunc_index, trunc_obs, ep_keys, ep_returns, ep_lengths = [], [], [], [], []
        term_index, term_obs = [], []
        # a recurrent module's learner replays each env's steps from its state before the first one
        state_in = self.act_state.copy() if getattr(self.policy.module, "recurrent", False) else None
        for t in range(T):
            obs[t] = self.obs
            a, out, self.act_state = self.policy.act(obs[t], self.noise.uniforms(), self.act_state, **explore)
            if dist_inputs is not None:
                dist_inputs[t] = out
            self.obs, r, term, trunc, info = self.envs.step(self.policy.dist.env_actions(a))
            actions[t] = a
            rewards[t] = r
            terms[t] = term
            truncs[t] = trunc
            self.ep_return += r
            self.ep_length += 1
            done = term | trunc
            if done.any():
                final_obs = info["final_obs"]
                for n in np.flatnonzero(done):
                    ep_keys.append(t * N + n)
                    ep_returns.append(self.ep_return[n])
                    ep_lengths.append(self.ep_length[n])
                    if trunc[n] and not term[n]:
                        trunc_index.append(t * N + n)
                        trunc_obs.append(np.asarray(final_obs[n], self.obs_dtype))
                    elif term[n]:
                        term_index.append(t * N + n)
                        term_obs.append(np.asarray(final_obs[n], self.obs_dtype))
                self.ep_return[done] = 0.0
                self.ep_length[done] = 0
                if self.act_state is not None:
                    self.act_state[done] = 0.0
        batch = SampleBatch({
            sb.OBS: obs, sb.ACTIONS: actions, sb.REWARDS: rewards, sb.TERMINATEDS: terms, sb.TRUNCATEDS: truncs,
            sb.BOOTSTRAP_OBS: np.asarray(self.obs, self.obs_dtype).copy(),
            sb.TRUNC_INDEX: np.asarray(trunc_index, np.int64),
            sb.TRUNC_OBS: np.asarray(trunc_obs, self.obs_dtype).reshape((-1,) + self.obs_shape),
            sb.TERM_INDEX: np.asarray(term_index, np.int64),
            sb.TERM_OBS: np.asarray(term_obs, self.obs_dtype).reshape((-1,) + self.obs_shape),
            sb.EP_KEYS: np.asarray(ep_keys, np.int64),
            sb.EP_RETURNS: np.asarray(ep_returns, np.float64),
            sb.EP_LENGTHS: np.asarray(ep_lengths, np.int64),
        })
        if dist_inputs is not None:
            batch[sb.BEHAVIOUR_INPUTS] = dist_inputs
        if state_in is not None:
            batch[sb.STATE_IN] = state_in
        return batch

    def reseed(self, restart_count: int) -> None:
        """Start over as the `restart_count`-th replacement of a failed worker (asynchronous patterns):
        envs reset with seeds from (run seed, env index, restart count), fresh noise streams likewise,
        episode accumulators at zero, so the new worker does not repeat the episodes of the first."""
        spec = self.spec
        seeds = [seeding.env_reset_seed(spec.seed, g, seeding.RESTART_ENV_RESET, restart_count)
                 for g in spec.env_indices]
        self.obs, _ = self.envs.reset(seed=seeds)
        self.noise = seeding.EnvNoise(spec.seed, spec.env_indices, stream=seeding.RESTART_ACTION_NOISE,
                                      per_step=self.policy.dist.noise_per_step, more=(restart_count,))
        self.ep_return[:] = 0.0
        self.ep_length[:] = 0
        if self.act_state is not None:
            self.act_state[:] = 0.0

    # -- state, for exact resume and for replacing a failed worker ---------------------------------
    def get_state(self) -> list[dict]:
        """This worker's state, one dict per env in global env order: the env itself (pickled with
        cloudpickle), its current observation, its noise stream and its episode accumulators.

        Per env, not per worker, so states gathered from one split of envs over workers can be
        handed to another split (`set_state` takes the entries of its own envs)."""
        import cloudpickle

        noise = self.noise.get_state()
        states = [{"env_index": g, "env": cloudpickle.dumps(self.envs.envs[n]),
                   "obs": np.array(self.obs[n], copy=True), "ep_return": float(self.ep_return[n]),
                   "ep_length": int(self.ep_length[n]), "noise_gen": noise["gens"][n],
                   "noise_buf": noise["buf"][n].copy(), "noise_pos": noise["pos"]}
                  for n, g in enumerate(self.spec.env_indices)]
        if self.act_state is not None:
            for n, s in enumerate(states):
                s["act_state"] = self.act_state[n].copy()
        return states

    def set_state(self, states: list[dict]) -> None:
        """Restore what `get_state` returned (the entries of this worker's envs, in env order)."""
        import pickle

        if [s["env_index"] for s in states] != list(self.spec.env_indices):
            raise ValueError(f"worker {self.spec.worker_index} hosts envs {list(self.spec.env_indices)}, "
                             f"got the states of envs {[s['env_index'] for s in states]}")
        for n, s in enumerate(states):
            old = self.envs.envs[n]
            self.envs.envs[n] = pickle.loads(s["env"])
            try:
                old.close()
            except Exception:
                pass
            self.ep_return[n] = s["ep_return"]
            self.ep_length[n] = s["ep_length"]
            if self.act_state is not None and "act_state" in s:
                self.act_state[n] = s["act_state"]
        self.obs = np.stack([np.asarray(s["obs"]) for s in states])
        pos = {s["noise_pos"] for s in states}
        if len(pos) != 1:
            raise ValueError("the envs of one worker must be at the same noise position")
        self.noise.set_state({"gens": [s["noise_gen"] for s in states],
                              "buf": np.stack([s["noise_buf"] for s in states]), "pos": pos.pop()})

    def close(self) -> None:
        self.envs.close()
