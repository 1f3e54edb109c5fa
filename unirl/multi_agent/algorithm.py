"""Any synchronous algorithm on a PettingZoo env: one learner per policy, one set of multi-agent rollout workers.

`PPO({"env": "mpe2.simple_spread_v3", ...})` builds `MultiAgentPPO`, the class PPO extended by
`MultiAgentAlgorithm`; PPO's own file does not change. The run keeps, per policy, a *learner*: an instance of the
algorithm's class with that policy's config (the run's config and the policy's overrides), its policy, optimizer,
normalisers, generator, counters and its bound execution pattern (a replay buffer for DQN, SAC, TD3). Each
iteration:

1. every worker steps its envs, each agent acting with its policy's current weights (`unirl.multi_agent.worker`),
   and returns one SampleBatch per policy with its slots in (global env, agent) order;
2. the batches are joined in env order, the env steps and finished games counted;
3. each trained policy's pattern takes its batch as if its own workers had sampled it (its `sampling_group` is a
   feed of that policy's batches) and runs its iteration unchanged: postprocess, learn, replay, target updates.

So every policy's learning is the single-agent algorithm's, and the run is bit-identical on every backend and
worker count, as the workers' batches are.
"""
from __future__ import annotations

import collections

import numpy as np

from unirl import seeding
from unirl.errors import UnirlError
from unirl.multi_agent import config as ma_config
from unirl.multi_agent.env import is_multi_agent_env

#: Seed stream of each policy's initial weights and learner generator: (run seed, stream, policy index).
POLICY_INIT = 14


def wants_multi_agent(config, overrides: dict) -> bool:
    """Whether a config (dict or config object) and overrides describe a multi-agent run (a PettingZoo env)."""
    if hasattr(config, "to_dict"):
        config = config.to_dict()
    d = dict(config or {}) if isinstance(config, dict) else {}
    d.update({k: v for k, v in overrides.items() if k != "callbacks"})
    env = d.get("env")
    return is_multi_agent_env(env) or (bool(d.get("multi_agent")) and isinstance(env, str) and ":" in env)


_CLASSES: dict = {}


def multi_agent_class(cls):
    """The class `cls` extended for multi-agent runs (made once per class)."""
    if cls not in _CLASSES:
        _CLASSES[cls] = type(f"MultiAgent{cls.__name__}", (MultiAgentAlgorithm, cls),
                             {"base_class": cls, "__module__": __name__})
    return _CLASSES[cls]


class PolicyFeed:
    """Stands in for a policy's rollout workers: `call_all("sample", ...)` returns the policy's batch of the current
    multi-agent round (the weights it is called with were the ones the round's workers acted with)."""

    handles = ()

    def __init__(self, run, pid: str):
        self.run, self.pid = run, pid

    def call_all(self, method: str, *args, **kwargs) -> list:
        if method != "sample":
            raise UnirlError(f"a multi-agent policy's pattern called `{method}` on its workers; only sampling is "
                             "shared through the multi-agent workers.")
        return [self.run.current["batches"][self.pid]]


class _AllNormalizers:
    def __init__(self, learners: dict):
        self.learners = learners

    def sync(self) -> None:
        for learner in self.learners.values():
            learner.normalizers.sync()


class MultiAgentSampler:
    """The multi-agent workers: sample(weights, explore) -> joined result (unirl.multi_agent.worker.join)."""

    def __init__(self, backend, specs: list):
        from unirl.execution.recovery import WorkerGroup
        from unirl.multi_agent.worker import MultiAgentWorker

        self.specs = list(specs)
        self.group = WorkerGroup(backend, MultiAgentWorker, [(s,) for s in specs])

    @property
    def workers(self):
        return self.group.handles

    def sample(self, weights: dict, explore: dict) -> dict:
        from unirl.multi_agent.worker import join

        return join(self.group.call_all("sample", weights, explore))

    def get_worker_states(self) -> list:
        return self.group.get_states()

    def set_worker_states(self, states: list) -> None:
        self.group.set_states(states, ranges=[s.env_indices for s in self.specs])


class MultiAgentAlgorithm:
    """Mixed in before an algorithm's class for multi-agent runs (see the module's docstring).

    Attributes: `learners` {policy id: the algorithm's learner for that policy}, `agents` (the env's agents),
    `mapping` {global env: {agent: policy id}}, `policies_to_train`, `league` (self-play, or None)."""

    base_class = None

    def __init__(self, config=None, callbacks=None, **overrides):
        from unirl.backends import get_backend
        from unirl.callbacks import make_callbacks, overrides_episode_end
        from unirl.execution import loops
        from unirl.execution.recovery import Recovery
        from unirl.multi_agent.env import EnvInfo

        base = self.base_class
        self.config = c = self.build_config(config, overrides)
        if not isinstance(base.execution, (loops.SyncSamples, loops.SyncReplay)):
            pattern = type(base.execution).__name__ if base.execution is not None else "a loop of its own"
            raise UnirlError(f"{base.name} cannot run on a multi-agent env yet: multi-agent runs take algorithms on the "
                             f"synchronous patterns (PPO, A2C, DQN, SAC, TD3, DDPG); {base.name} uses {pattern}.")
        if c.normalize_rewards:
            raise UnirlError("normalize_rewards is not supported in multi-agent runs yet (each agent's return would "
                             "need its own statistics); normalize_observations is.")
        self.callbacks = make_callbacks(callbacks)
        self._episode_callbacks = overrides_episode_end(self.callbacks)
        info = EnvInfo(c.env, c.env_config)
        self.env_info, self.agents = info, list(info.agents)
        self.mapping = ma_config.mapping(c, self.agents, c.num_envs)
        ids = ma_config.policy_ids(c)
        #: The algorithm's learner for each policy: an instance of the algorithm's own class.
        self.learners = {}
        for index, pid in enumerate(ids):
            self.learners[pid] = self._make_learner(base, pid, index, info)
        ma = c.multi_agent
        if "self_play" in ma:
            from unirl.multi_agent.league import League

            self.league = League(c, self.learners)
            default_train = [p for p in ids if p != self.league.opponent]
        else:
            self.league = None
            default_train = ids
        self.policies_to_train = list(ma.get("policies_to_train") or default_train)
        self.init_counters(c)
        n = c.metrics_num_episodes_for_smoothing
        #: Recent finished games: (returns per agent, the policy of each agent), for per-agent and win-rate metrics.
        self.recent_games = collections.deque(maxlen=n)
        self.normalizers = _AllNormalizers(self.learners)
        self.learner_rng = None
        self.current = None
        self.backend = get_backend(c.backend, **c.backend_options)
        self.backend.recovery = Recovery.from_config(c, self.backend)
        self.execution = None
        try:
            self.sampler = MultiAgentSampler(self.backend, self.multi_agent_worker_specs())
            for pid, learner in self.learners.items():
                learner.backend = self.backend
                learner._sampling_group = PolicyFeed(self, pid)
                learner.setup()
        except BaseException:
            self.backend.shutdown()
            raise

    # -- building ------------------------------------------------------------------------------------------------
    def _make_learner(self, base, pid: str, index: int, info):
        from unirl.callbacks import make_callbacks

        slots = [(g, a) for g, row in sorted(self.mapping.items()) for a, p in row.items() if p == pid]
        if not slots:
            raise UnirlError(f"multi_agent policy `{pid}` has no agent mapped to it; map one or remove it.")
        agents = sorted({a for _, a in slots}, key=self.agents.index)
        first = agents[0]
        for a in agents[1:]:
            for what, table in (("observation", info.obs_spaces), ("action", info.action_spaces)):
                if table[a] != table[first]:
                    raise UnirlError(f"agents `{first}` and `{a}` are both mapped to policy `{pid}` but their {what} "
                                     f"spaces differ ({table[first]} vs {table[a]}); map them to different policies.")
        pconfig = ma_config.policy_config(self.config, pid)
        seed = int(seeding.seed_sequence(self.config.seed, POLICY_INIT, index).generate_state(1, np.uint32)[0])
        learner = object.__new__(base)
        learner.init_learner(pconfig, base.policy_spec(pconfig, (info.obs_spaces[first], info.action_spaces[first]),
                                                       seed=seed))
        learner.learner_rng = np.random.Generator(np.random.PCG64(
            seeding.seed_sequence(self.config.seed, seeding.LEARNER, index)))
        learner.callbacks = make_callbacks(None)
        learner._episode_callbacks = False
        learner.policy_id = pid
        learner.agents = agents
        return learner

    def multi_agent_worker_specs(self) -> list:
        from unirl.multi_agent.worker import MultiAgentWorkerSpec

        c, k = self.config, self.config.num_envs_per_worker
        policies = {pid: learner.acting_policy for pid, learner in self.learners.items()}
        return [MultiAgentWorkerSpec(c.env, dict(c.env_config), c.seed, i, i * k, k, c.rollout_length, self.agents,
                                     {g: self.mapping[g] for g in range(i * k, (i + 1) * k)}, policies,
                                     self.env_info.obs_spaces)
                for i in range(c.num_workers)]

    def worker_specs(self, **options) -> list:
        return self.multi_agent_worker_specs()

    # -- the loop ------------------------------------------------------------------------------------------------
    def training_step(self) -> dict:
        from unirl.execution import loops

        if self.league is not None:
            self.league.choose_opponent(self.iteration)
        weights = {pid: learner.policy.get_flat_weights() for pid, learner in self.learners.items()}
        explore = {pid: loops.exploration(learner) for pid, learner in self.learners.items()}
        self.current = out = self.sampler.sample(weights, explore)
        games = out["episodes"]
        self.record_episodes(np.array([g[2].sum() for g in games], np.float64),
                             np.array([g[3] for g in games], np.int64), steps=out["env_steps"])
        for _, env_index, returns, _ in games:
            self.recent_games.append((returns.copy(), dict(self.mapping[env_index])))
        if self.league is not None:
            self.league.record(games, self.mapping, self.agents)
        stats = {}
        for pid, learner in self.learners.items():
            learner._episodes_this_iter = 0
            learner._returns_this_iter = np.zeros(0)
            if pid in self.policies_to_train:
                s = learner.training_step()
            else:
                learner.record_batch(out["batches"][pid])
                s = {}
            learner.iteration += 1
            self.max_abs_reward = max(self.max_abs_reward, learner.max_abs_reward)
            stats.update({f"{pid}/{k}": v for k, v in s.items()})
        if self.league is not None:
            stats.update(self.league.update(self.iteration + 1))
        self.current = None
        return stats

    def extra_metrics(self) -> dict:
        """Per policy: its agents' mean return over recent episodes and its env steps; per agent: mean return; for
        zero-sum games (the agents' returns of a game sum to 0): each policy's win, draw and loss rates."""
        out = {}
        for pid, learner in self.learners.items():
            r = np.asarray(learner.recent_returns, np.float64)
            out[f"policy/{pid}/episode_return_mean"] = float(r.mean()) if len(r) else float("nan")
            out[f"policy/{pid}/agent_steps_total"] = learner.timesteps_total
        if self.recent_games:
            returns = np.stack([g[0] for g in self.recent_games])
            for j, a in enumerate(self.agents):
                out[f"agent/{a}/episode_return_mean"] = float(returns[:, j].mean())
            zero_sum = [g for g in self.recent_games if abs(float(g[0].sum())) < 1e-6 and np.any(g[0] != 0)
                        or (np.all(g[0] == 0) and len(g[0]) > 1)]
            if zero_sum and len(zero_sum) == len(self.recent_games):
                for pid in self.learners:
                    outcomes = [np.sign(ret[j]) for ret, row in zero_sum for j, a in enumerate(self.agents)
                                if row[a] == pid]
                    if outcomes:
                        o = np.asarray(outcomes)
                        out[f"policy/{pid}/win_rate"] = float(np.mean(o > 0))
                        out[f"policy/{pid}/draw_rate"] = float(np.mean(o == 0))
                        out[f"policy/{pid}/loss_rate"] = float(np.mean(o < 0))
        if self.league is not None:
            out.update(self.league.metrics())
        return out

    @property
    def policy(self):
        """The policy of a single-policy run; with several, the primary one (`primary_policy_id`, the first trained),
        which is the one the conformance suite's learner checks capture."""
        return self.learners[self.primary_policy_id].policy

    @property
    def primary_policy_id(self) -> str:
        return primary_policy_id(self.config)

    def flat_weights(self) -> np.ndarray:
        return np.concatenate([learner.policy.get_flat_weights() for _, learner in sorted(self.learners.items())])

    def current_lr(self) -> float:
        return self.learners[sorted(self.learners)[0]].current_lr()

    # -- acting and evaluation -----------------------------------------------------------------------------------
    def policy_of(self, policy_id: str | None):
        if policy_id is None:
            if len(self.learners) != 1:
                raise UnirlError(f"this multi-agent run has policies {sorted(self.learners)}: say which one acts "
                                 "(policy_id=...).")
            policy_id = next(iter(self.learners))
        if policy_id not in self.learners:
            from unirl.errors import did_you_mean

            raise UnirlError(f"unknown policy `{policy_id}`; this run has {sorted(self.learners)}."
                             + did_you_mean(policy_id, list(self.learners)))
        return self.learners[policy_id].policy

    def compute_actions(self, obs, explore: bool = False, seed: int = 0, policy_id: str | None = None) -> np.ndarray:
        """Actions of policy `policy_id` (needed when the run has several) for a batch of flat observations
        (a Dict observation flattened by the policy's FlatDict space, mask last)."""
        policy = self.policy_of(policy_id)
        obs = np.asarray(obs, np.float32)
        if not explore:
            return policy.compute_actions(obs)
        noise = seeding.generator(seed, seeding.ACTION_NOISE).random((len(obs), policy.dist.noise_per_step))
        return policy.compute_actions(obs, noise)

    def evaluate(self, num_episodes: int | None = None) -> dict:
        """Greedy games (each agent acting with its policy as mapped in env `game % num_envs`), game k's env seeded
        from (config seed, k): the mean return summed over agents, per agent and, for zero-sum games, per policy."""
        from unirl.multi_agent.evaluation import play

        n = self.evaluation_episodes(num_episodes)
        c = self.config
        mapping = {k: self.mapping[k % c.num_envs] for k in range(n)}

        def choose(decisions):
            return greedy_actions(self, mapping, decisions)

        games = play(c.env, c.env_config, self.env_info.obs_spaces, n, c.seed, choose)
        totals = np.array([g[0].sum() for g in games])
        out = {"evaluation/episode_return_mean": float(totals.mean()), "evaluation/episodes": n,
               "evaluation/episode_returns": totals.tolist(), "weights_digest": self.weights_digest()}
        for j, a in enumerate(self.agents):
            out[f"evaluation/agent/{a}/episode_return_mean"] = float(np.mean([g[0][j] for g in games]))
        return out

    # -- checkpoints ---------------------------------------------------------------------------------------------
    def get_state(self) -> tuple[dict, dict]:
        arrays, policies = {}, {}
        for pid, learner in sorted(self.learners.items()):
            a, s = learner.get_state()
            arrays.update({f"policy/{pid}/{k}": v for k, v in a.items()})
            policies[pid] = {k: v for k, v in s.items() if k not in ("config", "algorithm_class")}
        state = {
            "algorithm": self.name,
            "algorithm_class": f"{self.base_class.__module__}:{self.base_class.__qualname__}",
            "config": self.config.to_dict(),
            **self.counters_state(),
            "recent_games": [[g[0].tolist(), g[1]] for g in self.recent_games],
            "format": 2,
            "policies": policies,
            "param_names": [f"{pid}/{n}" for pid, learner in sorted(self.learners.items())
                            for n in learner.policy.layout.names],
        }
        if self.league is not None:
            la, ls = self.league.get_state()
            arrays.update(la)
            state["league"] = ls
        return arrays, state

    def set_state(self, arrays: dict, state: dict) -> None:
        for pid, learner in self.learners.items():
            prefix = f"policy/{pid}/"
            sub = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
            learner.set_state(sub, dict(state["policies"][pid], config=learner.config.to_dict()))
        self.set_counters_state(state)
        self.recent_games.extend((np.asarray(r, np.float64), {a: p for a, p in row.items()})
                                 for r, row in state.get("recent_games", []))
        if self.league is not None:
            self.league.set_state(arrays, state["league"])


def primary_policy_id(config) -> str:
    """The first policy that learns (sorted ids; the self-play learner when there is a league)."""
    ids = ma_config.policy_ids(config)
    ma = config.multi_agent
    train = ma.get("policies_to_train") or [p for p in ids if p != ma.get("self_play", {}).get("opponent")]
    return sorted(train)[0]


def primary_learner_setup(config):
    """(the primary policy's config, its (observation space, action space)) for a multi-agent config, else None:
    what rebuilds that policy's learner outside a run (the conformance suite's learner checks)."""
    from unirl.multi_agent.env import EnvInfo

    if not wants_multi_agent(config, {}):
        return None
    pid = primary_policy_id(config)
    info = EnvInfo(config.env, config.env_config)
    table = ma_config.mapping(config, info.agents, config.num_envs)
    agent = next(a for row in table.values() for a in info.agents if row[a] == pid)
    return ma_config.policy_config(config, pid), (info.obs_spaces[agent], info.action_spaces[agent])


def greedy_actions(run, mapping: dict, decisions: list) -> list:
    """Greedy actions for (game, agent, obs) decisions, each policy acting on its decisions in one batched call."""
    actions = [None] * len(decisions)
    by_policy: dict = {}
    for i, (game, agent, _) in enumerate(decisions):
        by_policy.setdefault(mapping[game][agent], []).append(i)
    for pid, idx in sorted(by_policy.items()):
        policy = run.learners[pid].policy
        acts = policy.compute_actions(np.stack([decisions[i][2] for i in idx]).astype(np.float32))
        for k, i in enumerate(idx):
            actions[i] = policy.dist.env_actions(acts[k:k + 1])[0]
    return actions
