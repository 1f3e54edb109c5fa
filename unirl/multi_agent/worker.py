"""The multi-agent rollout worker: several PettingZoo envs, each agent acting with the policy it is mapped to.

Every (env, agent) pair is a *slot*. A slot's transitions are its own decisions: the observation it acted on,
its action, and what it received until its next decision (parallel envs: the next step; turn-based envs: the
agent's next turn), with the episode's end flags. A call of `sample` returns, for each policy, a SampleBatch of
`rollout_length` transitions of each slot mapped to it, [T, N_p] with the slots in (global env, agent) order:
the same rectangular batches single-agent workers return, so each policy's algorithm postprocesses and learns
on them unchanged.

Invariance over splits of envs over workers holds by construction: each env is stepped until each of its own
slots has T transitions, independently of the other envs (an env whose slots are full waits); transitions past
T (a slot that got ahead) stay in the worker for the next call; each slot draws its action noise from its own
stream keyed by (run seed, global env index, agent index), one draw per decision.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from unirl import sample_batch as sb
from unirl import seeding
from unirl.errors import UnirlError
from unirl.sample_batch import SampleBatch

logger = logging.getLogger("unirl.worker")

#: An env stepped this many times T in one call without filling its slots: an agent that never acts.
MAX_STEPS_PER_TRANSITION = 1000


@dataclass
class MultiAgentWorkerSpec:
    """Everything a multi-agent worker needs (plain data)."""

    env: str
    env_config: dict
    seed: int
    worker_index: int
    env_start: int
    num_envs: int
    rollout_length: int
    #: The env's agents in its own order, the policy each agent of each hosted env is mapped to
    #: ({global env: {agent: policy id}}), and the acting policies' specs.
    agents: list
    mapping: dict
    policies: dict
    obs_spaces: dict
    record_dist_inputs: bool = False

    @property
    def env_indices(self) -> range:
        return range(self.env_start, self.env_start + self.num_envs)


class SlotNoise:
    """Uniforms for exploration, one stream per slot keyed by (run seed, global env, agent index); each slot
    advances its own stream by one row of `per_step` uniforms per decision, drawn in blocks."""

    def __init__(self, run_seed: int, keys: list, per_step: list, block: int = 256, stream: int = seeding.MA_ACTION_NOISE):
        self.gens = [seeding.generator(run_seed, stream, e, a) for e, a in keys]
        self.per_step = [int(k) for k in per_step]
        self.block = block
        self.bufs = [np.empty((0, k)) for k in self.per_step]
        self.pos = [0] * len(keys)

    def draw(self, slot: int) -> np.ndarray:
        if self.pos[slot] >= len(self.bufs[slot]):
            k = self.per_step[slot]
            self.bufs[slot] = self.gens[slot].random(self.block * k).reshape(self.block, k)
            self.pos[slot] = 0
        u = self.bufs[slot][self.pos[slot]]
        self.pos[slot] += 1
        return u

    def get_state(self, slot: int) -> dict:
        return {"gen": self.gens[slot].bit_generator.state, "buf": self.bufs[slot].copy(), "pos": self.pos[slot]}

    def set_state(self, slot: int, state: dict) -> None:
        self.gens[slot].bit_generator.state = state["gen"]
        self.bufs[slot] = np.asarray(state["buf"])
        self.pos[slot] = int(state["pos"])


@dataclass
class _Slot:
    pending: tuple | None = None  # (obs, action, dist_inputs) of the decision awaiting its outcome
    queue: list = field(default_factory=list)  # completed transitions, oldest first
    ep_return: float = 0.0
    ep_length: int = 0


class MultiAgentWorker:
    """sample(weights, explore) -> ({policy: SampleBatch [T, N_p]}, env stats) from this worker's envs."""

    def __init__(self, spec: MultiAgentWorkerSpec):
        from unirl.multi_agent.env import MultiAgentEnv

        self.spec = spec
        self.policies = {pid: ps.build() for pid, ps in sorted(spec.policies.items())}
        self.agent_index = {a: j for j, a in enumerate(spec.agents)}
        self.envs = [MultiAgentEnv(spec.env, spec.env_config, spec.obs_spaces) for _ in spec.env_indices]
        for env, g in zip(self.envs, spec.env_indices):
            env.reset(seed=seeding.env_reset_seed(spec.seed, g))
        # slots in (env, agent) order; per policy, its slots' columns in that order
        self.slot_of = {}
        keys, per_step = [], []
        for n, g in enumerate(spec.env_indices):
            for a in spec.agents:
                self.slot_of[(n, a)] = len(keys)
                keys.append((g, self.agent_index[a]))
                per_step.append(self.policies[spec.mapping[g][a]].dist.noise_per_step)
        self.slots = [_Slot() for _ in keys]
        self.noise = SlotNoise(spec.seed, keys, per_step)
        self.columns = {pid: [self.slot_of[(n, a)] for n, g in enumerate(spec.env_indices) for a in spec.agents
                              if spec.mapping[g][a] == pid] for pid in self.policies}
        self.env_return = [np.zeros(len(spec.agents)) for _ in self.envs]
        self.env_length = [0] * len(self.envs)

    @staticmethod
    def preload_modules(spec) -> list[str]:
        mods = []
        for ps in spec.policies.values():
            mods += [m for m in ps.preload_modules() if m not in mods]
        return mods

    def worker_id(self) -> int:
        return self.spec.worker_index

    # -- sampling ---------------------------------------------------------------------------------------------
    def _complete(self, n: int, agent: str, reward: float, term: bool, trunc: bool, final_obs, next_obs) -> None:
        slot = self.slots[self.slot_of[(n, agent)]]
        slot.ep_return += reward
        self.env_return[n][self.agent_index[agent]] += reward
        if slot.pending is None:  # rewards before an agent's first decision count in its return only
            return
        obs, action, inputs = slot.pending
        slot.pending = None
        slot.ep_length += 1
        done = term or trunc
        end = (slot.ep_return, slot.ep_length) if done else None
        slot.queue.append((obs, action, reward, term, trunc, final_obs, inputs, None if done else next_obs, end))
        if done:
            slot.ep_return, slot.ep_length = 0.0, 0

    def _needs(self, n: int, T: int) -> bool:
        return any(len(self.slots[self.slot_of[(n, a)]].queue) < T for a in self.spec.agents)

    def sample(self, weights: dict | None = None, explore: dict | None = None) -> dict:
        """`rollout_length` transitions of every slot, acting with `weights[policy]` (flat) and `explore[policy]`."""
        spec = self.spec
        for pid, w in (weights or {}).items():
            self.policies[pid].set_flat_weights(w)
        explore = explore or {}
        for pid, p in self.policies.items():
            p.dist.check_exploration(explore.get(pid, {}))
        T = spec.rollout_length
        active = [n for n in range(len(self.envs)) if self._needs(n, T)]
        steps = [0] * len(self.envs)
        episodes = []  # (step in this call, global env, returns per agent, length in env steps)
        while active:
            decisions = []  # (n, agent, obs)
            for n in active:
                env = self.envs[n]
                while True:
                    completed, decide, finished = env.poll()
                    for agent, (r, term, trunc, final) in completed.items():
                        self._complete(n, agent, r, term, trunc, final, decide.get(agent))
                    if finished:
                        episodes.append((steps[n], spec.env_start + n, self.env_return[n].copy(), self.env_length[n]))
                        self.env_return[n][:] = 0.0
                        self.env_length[n] = 0
                        env.reset()
                        continue
                    if decide or not self._needs(n, T):
                        break
                    env.act({})  # a turn-based env's finished agent leaves
                if not self._needs(n, T):
                    continue
                decisions += [(n, a, o) for a, o in decide.items()]
            actions = self._act(decisions, explore)
            by_env: dict[int, dict] = {}
            for (n, agent, _), a in zip(decisions, actions):
                by_env.setdefault(n, {})[agent] = a
            for n in active:
                if n in by_env:
                    self.envs[n].act({a: self._env_action(n, a, x) for a, x in by_env.get(n, {}).items()})
                    steps[n] += 1
                    self.env_length[n] += 1
                    if steps[n] > MAX_STEPS_PER_TRANSITION * T:
                        short = [a for a in spec.agents if len(self.slots[self.slot_of[(n, a)]].queue) < T]
                        raise UnirlError(f"env {spec.env_start + n} of `{spec.env}` took {steps[n]} steps in one "
                                         f"sampling call without agents {short} acting {T} times each: an agent "
                                         "that never acts cannot fill its batch.")
            active = [n for n in active if self._needs(n, T)]
        batches = {pid: self._batch(pid, T) for pid in self.policies if self.columns[pid]}
        return {"batches": batches, "env_steps": int(sum(steps)), "episodes": episodes}

    def _policy_of(self, n: int, agent: str) -> str:
        return self.spec.mapping[self.spec.env_start + n][agent]

    def _env_action(self, n, agent, action):
        policy = self.policies[self._policy_of(n, agent)]
        a = policy.dist.env_actions(np.asarray(action)[None])[0]
        return int(a) if np.ndim(a) == 0 and np.issubdtype(np.asarray(a).dtype, np.integer) else a

    def _act(self, decisions: list, explore: dict) -> list:
        """Actions for the decisions, each policy acting on its decisions in one batched call."""
        actions = [None] * len(decisions)
        by_policy: dict[str, list[int]] = {}
        for i, (_, agent, _) in enumerate(decisions):
            by_policy.setdefault(self._policy_of(decisions[i][0], agent), []).append(i)
        for pid, idx in sorted(by_policy.items()):
            policy = self.policies[pid]
            obs = np.stack([decisions[i][2] for i in idx]).astype(np.float32)
            out = policy.policy_outputs(obs)
            noise = np.stack([self.noise.draw(self.slot_of[(decisions[i][0], decisions[i][1])]) for i in idx])
            acts = policy.dist.sample_numpy(out, noise, **explore.get(pid, {}))
            for k, i in enumerate(idx):
                n, agent, o = decisions[i]
                actions[i] = acts[k]
                slot = self.slots[self.slot_of[(n, agent)]]
                slot.pending = (o, acts[k], out[k] if self.spec.record_dist_inputs else None)
        return actions

    def _batch(self, pid: str, T: int) -> SampleBatch:
        cols = self.columns[pid]
        N = len(cols)
        taken = [self.slots[c].queue[:T] for c in cols]
        for c in cols:
            del self.slots[c].queue[:T]
        obs = np.stack([np.stack([tr[0] for tr in col]) for col in taken], axis=1).astype(np.float32)
        actions = np.stack([np.stack([np.asarray(tr[1]) for tr in col]) for col in taken], axis=1)
        rewards = np.array([[tr[2] for tr in col] for col in taken], np.float32).T.copy()
        terms = np.array([[tr[3] for tr in col] for col in taken], bool).T.copy()
        truncs = np.array([[tr[4] for tr in col] for col in taken], bool).T.copy()
        zero = np.zeros_like(obs[0, 0])
        bootstrap = np.stack([col[-1][7] if col[-1][7] is not None else zero for col in taken]).astype(np.float32)
        trunc_index, trunc_obs, ep_keys, ep_returns, ep_lengths = [], [], [], [], []
        for t in range(T):
            for n, col in enumerate(taken):
                tr = col[t]
                if tr[4]:
                    trunc_index.append(t * N + n)
                    trunc_obs.append(tr[5] if tr[5] is not None else zero)
                if tr[8] is not None:
                    ep_keys.append(t * N + n)
                    ep_returns.append(tr[8][0])
                    ep_lengths.append(tr[8][1])
        batch = SampleBatch({
            sb.OBS: obs, sb.ACTIONS: actions.astype(self.policies[pid].dist.action_dtype), sb.REWARDS: rewards,
            sb.TERMINATEDS: terms, sb.TRUNCATEDS: truncs, sb.BOOTSTRAP_OBS: bootstrap,
            sb.TRUNC_INDEX: np.asarray(trunc_index, np.int64),
            sb.TRUNC_OBS: np.asarray(trunc_obs, np.float32).reshape((-1,) + obs.shape[2:]),
            sb.EP_KEYS: np.asarray(ep_keys, np.int64),
            sb.EP_RETURNS: np.asarray(ep_returns, np.float64),
            sb.EP_LENGTHS: np.asarray(ep_lengths, np.int64),
        })
        if self.spec.record_dist_inputs:
            batch[sb.BEHAVIOUR_INPUTS] = np.stack([np.stack([tr[6] for tr in col]) for col in taken],
                                                  axis=1).astype(np.float32)
        return batch

    # -- state, for exact resume and for replacing a failed worker ---------------------------------------------
    def get_state(self) -> list[dict]:
        """One dict per env in global env order: the env (cloudpickled), its slots and their noise streams."""
        import copy

        from unirl.multi_agent.env import dumps_env

        out = []
        for n, g in enumerate(self.spec.env_indices):
            ids = [self.slot_of[(n, a)] for a in self.spec.agents]
            out.append({"env_index": g, "env": dumps_env(self.envs[n]),
                        "slots": [copy.deepcopy(self.slots[i]) for i in ids],
                        "noise": [self.noise.get_state(i) for i in ids],
                        "env_return": self.env_return[n].copy(), "env_length": self.env_length[n]})
        return out

    def set_state(self, states: list[dict]) -> None:
        import copy
        import pickle

        if [s["env_index"] for s in states] != list(self.spec.env_indices):
            raise ValueError(f"worker {self.spec.worker_index} hosts envs {list(self.spec.env_indices)}, "
                             f"got the states of envs {[s['env_index'] for s in states]}")
        for n, s in enumerate(states):
            self.envs[n].close()
            self.envs[n] = pickle.loads(s["env"])
            for a, slot, noise in zip(self.spec.agents, s["slots"], s["noise"]):
                i = self.slot_of[(n, a)]
                self.slots[i] = copy.deepcopy(slot)
                self.noise.set_state(i, noise)
            self.env_return[n] = np.array(s["env_return"], np.float64)
            self.env_length[n] = int(s["env_length"])

    def close(self) -> None:
        for env in self.envs:
            env.close()


def join(parts: list[dict]) -> dict:
    """The results of several workers (in worker order, i.e. env order) as one: per-policy batches joined along the
    env axis, env steps summed, finished env episodes in (step in the call, global env) order."""
    pids = sorted(parts[0]["batches"])
    batches = {pid: SampleBatch.concat_envs([p["batches"][pid] for p in parts]) for pid in pids}
    episodes = sorted((e for p in parts for e in p["episodes"]), key=lambda e: (e[0], e[1]))
    return {"batches": batches, "env_steps": sum(p["env_steps"] for p in parts), "episodes": episodes}
