"""PettingZoo environments: finding them by name, their agents and spaces, and one stepping interface for both APIs.

An env is given as a PettingZoo module path (`pettingzoo.classic.connect_four_v3`, `mpe2.simple_spread_v3`: the
module's `parallel_env` or `env` constructor is called with env_config as keyword arguments) or as
`module:function` returning a `ParallelEnv` or an `AECEnv`. Both APIs are stepped through `MultiAgentEnv`:
`decisions()` lists the agents to act now with their observations, `step(actions)` applies them and returns
what each acting (or finishing) agent received, so the rollout worker handles simultaneous-move (parallel)
and turn-based (AEC: only the agent to move acts) games the same way.
"""
from __future__ import annotations

import importlib

import numpy as np

from unirl.errors import UnirlError, did_you_mean

#: Package prefixes of PettingZoo env modules: ids starting with one are multi-agent envs.
PETTINGZOO_PREFIXES = ("pettingzoo.", "mpe2.")


#: Namespaces of PettingZoo's own registry (`pettingzoo.make`): "classic/connect_four-v3", "butterfly/pistonball-v6".
PETTINGZOO_NAMESPACES = ("atari", "butterfly", "classic", "sisl")


def is_multi_agent_env(env_id) -> bool:
    """True for a PettingZoo registry id ("classic/connect_four-v3") or env module path (`mpe2.simple_spread_v3`,
    `pettingzoo.classic.connect_four_v3`); a `module:function` is one when the config has `multi_agent`."""
    if not isinstance(env_id, str):
        return False
    return env_id.startswith(PETTINGZOO_PREFIXES) or _registry_id(env_id)


def _registry_id(env_id: str) -> bool:
    return "/" in env_id and env_id.split("/", 1)[0] in PETTINGZOO_NAMESPACES and ":" not in env_id


def is_pettingzoo_module(env_id) -> bool:
    """A module path inside the PettingZoo or MPE2 packages (no `module:function`): loading it runs their code only."""
    import re

    if isinstance(env_id, str) and _registry_id(env_id):
        return True
    return (isinstance(env_id, str) and env_id.startswith(PETTINGZOO_PREFIXES) and ":" not in env_id
            and re.fullmatch(r"[A-Za-z_][\w.]*", env_id) is not None and ".." not in env_id)


def _constructor(env_id: str):
    """The callable building the env from keyword arguments."""
    if _registry_id(env_id):
        try:
            import pettingzoo
        except ImportError:
            raise UnirlError(f"environment `{env_id}` needs PettingZoo: install it with "
                             "`pip install 'unirl[multiagent]'`.") from None
        import functools

        if env_id in pettingzoo.parallel_registry:
            return functools.partial(pettingzoo.make, "parallel", env_id)
        if env_id in pettingzoo.aec_registry:
            return functools.partial(pettingzoo.make, "aec", env_id)
        known = sorted(set(pettingzoo.aec_registry) | set(pettingzoo.parallel_registry))
        raise UnirlError(f"unknown PettingZoo environment `{env_id}`." + did_you_mean(env_id, known))
    if ":" in env_id:
        module, _, name = env_id.partition(":")
    else:
        module, name = env_id, None
    try:
        import warnings

        with warnings.catch_warnings():  # PettingZoo's modules warn that `pettingzoo.make` ids are the new way
            warnings.filterwarnings("ignore", "The old environment creation API", DeprecationWarning)
            mod = importlib.import_module(module)
    except ImportError as e:
        if module.startswith(PETTINGZOO_PREFIXES):
            raise UnirlError(f"environment `{env_id}` needs PettingZoo ({e.name} is missing): install it with "
                             "`pip install 'unirl[multiagent]'`.") from None
        raise UnirlError(f"cannot import module `{module}` of environment `{env_id}`: {e}") from None
    if name is not None:
        fn = getattr(mod, name, None)
        if not callable(fn):
            raise UnirlError(f"module `{module}` has no env constructor `{name}` (environment `{env_id}`).")
        return fn
    for attr in ("parallel_env", "env"):
        if callable(getattr(mod, attr, None)):
            return getattr(mod, attr)
    raise UnirlError(f"module `{module}` has neither `parallel_env` nor `env`: it is not a PettingZoo env module.")


def make_raw(env_id: str, env_config: dict | None = None):
    """The PettingZoo env itself (ParallelEnv or AECEnv), built with env_config as keyword arguments."""
    from pettingzoo.utils.env import AECEnv, ParallelEnv

    fn = _constructor(env_id)
    try:
        env = fn(**dict(env_config or {}))
    except TypeError as e:
        raise UnirlError(f"cannot build multi-agent environment `{env_id}` with env_config "
                         f"{dict(env_config or {})}: {e}") from None
    if not isinstance(env, (AECEnv, ParallelEnv)):
        raise UnirlError(f"`{env_id}` built {type(env).__name__}, not a PettingZoo ParallelEnv or AECEnv.")
    return env


def is_parallel(env) -> bool:
    from pettingzoo.utils.env import AECEnv

    return not isinstance(env, AECEnv)


class EnvInfo:
    """An env's agents (`possible_agents`, in the env's order), their observation and action spaces (Dict
    observations as unirl.spaces.FlatDict) and its API ("parallel" or "aec")."""

    def __init__(self, env_id: str, env_config: dict | None = None):
        from unirl.spaces import flat_space

        env = make_raw(env_id, env_config)
        try:
            self.api = "parallel" if is_parallel(env) else "aec"
            self.agents = list(env.possible_agents)
            self.action_spaces = {a: env.action_space(a) for a in self.agents}
            self.obs_spaces = {a: flat_space(env.observation_space(a), self.action_spaces[a]) for a in self.agents}
        finally:
            env.close()


def _none():
    return None


def _set_dict(obj, state) -> None:
    obj.__dict__.update(state)


def dumps_env(env) -> bytes:
    """An env with its current state, as bytes (pickle.loads restores it). PettingZoo envs pickle through EzPickle,
    which rebuilds a fresh env from the constructor's arguments and so loses the game in progress; here every
    object pickles its attributes instead (cloudpickle otherwise), so a restored env is where the saved one was."""
    import io

    import cloudpickle
    from gymnasium.utils import EzPickle

    class StatePickler(cloudpickle.CloudPickler):
        def reducer_override(self, obj):
            if isinstance(obj, EzPickle) and not isinstance(obj, type):
                return object.__new__, (type(obj),), dict(obj.__dict__), None, None, _set_dict
            if type(obj).__module__.startswith("pygame"):  # a rendering surface, font or clock: not env state
                return _none, ()
            return super().reducer_override(obj)

    buf = io.BytesIO()
    StatePickler(buf).dump(env)
    return buf.getvalue()


class MultiAgentEnv:
    """One PettingZoo env behind one interface, for parallel and turn-based (AEC) envs alike:

    - `poll() -> (completions, decisions, finished)`: `completions[agent] = (reward, terminated, truncated,
      final_obs)` for each agent whose last action's outcome is now known (parallel: every agent that acted in the
      last step; AEC: the agent to move, with what it accumulated since it last moved), `decisions[agent] = obs`
      for the agents to act now, `finished` when the episode is over (then the caller resets);
    - `act(actions)`: apply the decisions' actions (AEC: a finished agent's turn is taken with None).

    Observations come flat (Dict spaces through unirl.spaces.FlatDict). `reset(seed)`; a reset without a seed
    continues the env's own random stream."""

    def __init__(self, env_id: str, env_config: dict | None, obs_spaces: dict):
        self.env = make_raw(env_id, env_config)
        self.parallel = is_parallel(self.env)
        self.obs_spaces = obs_spaces
        self._obs = {}
        self._completed = {}
        self._reported = False

    def _flat(self, agent, obs):
        space = self.obs_spaces[agent]
        if hasattr(space, "parts"):
            return space.flatten(obs)
        return np.asarray(obs, np.float32).reshape(space.shape)

    def reset(self, seed: int | None = None) -> None:
        self._completed = {}
        self._reported = False
        if self.parallel:
            obs, _ = self.env.reset(seed=seed)
            self._obs = {a: self._flat(a, o) for a, o in obs.items()}
        else:
            self.env.reset(seed=seed)

    def poll(self):
        if self.parallel:
            completed, self._completed = self._completed, {}
            return completed, dict(self._obs), not self.env.agents
        env = self.env
        if not env.agents:
            return {}, {}, True
        agent = env.agent_selection
        term, trunc = bool(env.terminations[agent]), bool(env.truncations[agent])
        trunc = trunc and not term
        final = self._flat(agent, env.observe(agent)) if trunc else None
        # what the agent to move received since it last moved (AEC's env.last()), reported once per turn
        completed = {} if self._reported else {agent: (float(env._cumulative_rewards[agent]), term, trunc, final)}
        self._reported = True
        decisions = {} if (term or trunc) else {agent: self._flat(agent, env.observe(agent))}
        return completed, decisions, False

    def act(self, actions: dict) -> None:
        self._reported = False
        if not self.parallel:
            env = self.env
            agent = env.agent_selection
            env.step(actions.get(agent) if agent in actions else None)
            return
        obs, rewards, terms, truncs, _ = self.env.step(actions)
        self._completed = {}
        for a in actions:
            term = bool(terms.get(a, False))
            trunc = bool(truncs.get(a, False)) and not term
            final = self._flat(a, obs[a]) if trunc and a in obs else None
            self._completed[a] = (float(rewards.get(a, 0.0)), term, trunc, final)
        self._obs = {a: self._flat(a, o) for a, o in obs.items()
                     if not (terms.get(a, False) or truncs.get(a, False))}

    def close(self) -> None:
        try:
            self.env.close()
        except Exception:
            pass
