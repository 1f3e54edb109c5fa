"""Gymnasium environments: building vector envs seeded by global env index, with clear errors."""
from __future__ import annotations

import gymnasium as gym
import numpy as np

from unirl import pomdp  # noqa: F401  (registers unirl's partially observed envs)
from unirl.errors import UnirlError, did_you_mean
from unirl.loading import import_module


#: Env id prefixes (or ids) that come from an optional package: (import that registers them, the unirl extra).
ENV_FAMILIES = (
    ("ALE/", "ale_py", "atari"),
    ("MinAtar/", "minatar.gym", "minatar"),
    ("MiniGrid-", "minigrid", "minigrid"), ("BabyAI-", "minigrid", "minigrid"),
)
#: Env ids whose Gymnasium module needs an extra's package: (id prefix, module to import, extra).
EXTRA_DEPENDENCIES = (
    ("LunarLander", "Box2D", "box2d"), ("BipedalWalker", "Box2D", "box2d"), ("CarRacing", "Box2D", "box2d"),
    ("Hopper", "mujoco", "mujoco"), ("HalfCheetah", "mujoco", "mujoco"), ("Walker2d", "mujoco", "mujoco"),
    ("Ant", "mujoco", "mujoco"), ("Humanoid", "mujoco", "mujoco"), ("Swimmer", "mujoco", "mujoco"),
    ("Reacher", "mujoco", "mujoco"), ("InvertedPendulum", "mujoco", "mujoco"),
    ("InvertedDoublePendulum", "mujoco", "mujoco"), ("Pusher", "mujoco", "mujoco"),
)

#: unirl's own env_config keys for Atari (ALE/...) envs, with their defaults: the standard
#: preprocessing (Mnih et al. 2015; Machado et al. 2018): no-op reset, frame skip 4 (max over the
#: last two frames), 84x84 grey, frame stack 4 (HWC, uint8), rewards clipped to their sign,
#: episodic life off. Every other key goes to gymnasium.make.
ATARI_DEFAULTS = {"atari_preprocessing": True, "noop_max": 30, "frame_skip": 4, "screen_size": 84,
                  "frame_stack": 4, "clip_rewards": True, "episodic_life": False}


def _missing_extra(package: str, extra: str, env_id: str) -> UnirlError:
    return UnirlError(f"environment `{env_id}` needs the `{package}` package: install it with "
                      f"`pip install 'unirl[{extra}]'`.")


def _load_family(env_id: str) -> None:
    """Import the package that registers `env_id`'s family, or say which extra installs it."""
    import importlib

    for prefix, module, extra in ENV_FAMILIES:
        if env_id.startswith(prefix):
            try:
                mod = importlib.import_module(module)
            except ImportError:
                raise _missing_extra(module.split(".")[0], extra, env_id) from None
            if module == "ale_py":
                gym.register_envs(mod)
            elif module == "minatar.gym" and env_id not in gym.registry:
                mod.register_envs()
    for prefix, module, extra in EXTRA_DEPENDENCIES:
        if env_id.startswith(prefix):
            try:
                importlib.import_module(module)
            except ImportError:
                raise _missing_extra(module, extra, env_id) from None


def check_env_id(env_id: str) -> None:
    """Raise a one-sentence error if Gymnasium does not know `env_id` ("EnvId", or "module:EnvId"
    whose module registers the env on import); envs of an optional family name the extra to install."""
    name = env_id
    if ":" in env_id:
        module, _, name = env_id.partition(":")
        mod = import_module(module, "environment", env_id)
        creator = getattr(mod, name, None)
        if name not in gym.registry and callable(creator):
            # "module:Class" or "module:creator": registered under its name, made with env_config as kwargs
            gym.register(name, entry_point=creator)
            return
    _load_family(name)
    if name in gym.registry:
        return
    raise UnirlError(f"unknown environment `{env_id}`: Gymnasium has no env with that id."
                     + (registering_package_hint(name) if ":" not in env_id else "")
                     + did_you_mean(name, gym.registry.keys()))


#: Env id prefixes of third-party packages whose name does not follow from the prefix:
#: prefix -> (module to import, pip package).
ENV_PACKAGES = {"MiniGrid": ("minigrid", "minigrid"), "BabyAI": ("minigrid", "minigrid"),
                "MiniWorld": ("miniworld", "miniworld"), "highway": ("highway_env", "highway-env"),
                "merge": ("highway_env", "highway-env"), "roundabout": ("highway_env", "highway-env"),
                "parking": ("highway_env", "highway-env"), "intersection": ("highway_env", "highway-env"),
                "racetrack": ("highway_env", "highway-env"), "Craftax": ("craftax", "craftax"),
                "procgen": ("procgen", "procgen"), "FetchReach": ("gymnasium_robotics", "gymnasium-robotics"),
                "FetchPush": ("gymnasium_robotics", "gymnasium-robotics"),
                "PointMaze": ("gymnasium_robotics", "gymnasium-robotics"),
                "AntMaze": ("gymnasium_robotics", "gymnasium-robotics"),
                "AdroitHand": ("gymnasium_robotics", "gymnasium-robotics")}


def _candidate_modules(env_id: str) -> list[tuple[str, str]]:
    """(module, pip package) pairs that might register `env_id`: a known prefix's package, else the id's
    first word in lower case ("MiniGrid-Empty-5x5-v0" -> minigrid; "Foo/Bar-v0" -> foo)."""
    import re

    word = re.split(r"[-/]", env_id, maxsplit=1)[0]
    out = [ENV_PACKAGES[word]] if word in ENV_PACKAGES else []
    for module in (word.lower(), word.lower().replace(".", "_"), re.sub(r"(?<!^)(?=[A-Z])", "_", word).lower()):
        if module.isidentifier() and (module, module) not in out and all(m != module for m, _ in out):
            out.append((module, module))
    return out


def registering_package_hint(env_id: str) -> str:
    """A sentence for the unknown-env error when an installed package registers `env_id` on import (then
    "package:EnvId" works, Gymnasium's convention), or when a known package that would is not installed;
    "" if neither. The candidate packages are named by the id itself (see _candidate_modules)."""
    import importlib
    import importlib.util

    import sys

    for module, pip_name in _candidate_modules(env_id):
        if module in sys.stdlib_module_names:
            continue
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            if module in {m for m, _ in ENV_PACKAGES.values()}:
                return (f" It belongs to the `{pip_name}` package, which is not installed: pip install {pip_name}, "
                        f"then use `{module}:{env_id}` (importing {module} registers its envs).")
            continue
        try:
            importlib.import_module(module)
        except Exception:  # a package that fails to import cannot register anything; say nothing about it
            continue
        if env_id in gym.registry:
            return (f" The installed package `{module}` registers it when imported: use "
                    f"`{module}:{env_id}` (Gymnasium's module:EnvId convention).")
    return ""


class ChannelsLast(gym.ObservationWrapper):
    """Stacked frames [k, H, W] as [H, W, k] (the NHWC layout of unirl's conv2d), uint8 kept."""

    def __init__(self, env):
        super().__init__(env)
        space = env.observation_space
        self.observation_space = gym.spaces.Box(0, 255, space.shape[1:] + space.shape[:1], np.uint8)

    def observation(self, obs):
        return np.ascontiguousarray(np.moveaxis(np.asarray(obs), 0, -1))


class ClipRewardSign(gym.RewardWrapper):
    def reward(self, reward):
        return float(np.sign(reward))


class ZeroBasedActions(gym.ActionWrapper):
    """A Discrete or MultiDiscrete action space with a nonzero `start` (e.g. Discrete(3, start=-1)),
    shown to unirl as starting at 0; the env receives action + start, i.e. exactly its own values."""

    def __init__(self, env):
        super().__init__(env)
        space = env.action_space
        if isinstance(space, gym.spaces.Discrete):
            self.offset = int(space.start)
            self.action_space = gym.spaces.Discrete(int(space.n), seed=None)
        else:
            self.offset = np.asarray(space.start)
            self.action_space = gym.spaces.MultiDiscrete(space.nvec)

    def action(self, action):
        if isinstance(self.offset, int):
            return int(action) + self.offset
        return np.asarray(action) + self.offset


def action_start(space):
    """The start of a Discrete / MultiDiscrete action space when it is not 0 (else None)."""
    if isinstance(space, gym.spaces.Discrete) and int(space.start) != 0:
        return int(space.start)
    if isinstance(space, gym.spaces.MultiDiscrete) and np.any(np.asarray(getattr(space, "start", 0)) != 0):
        return np.asarray(space.start)
    return None


def action_offset(env_id: str, env_config: dict | None = None):
    """What to add to the policy's 0-based actions to get this env's own (Discrete / MultiDiscrete
    `start`), or None."""
    check_env_id(env_id)
    env = _make_one_raw(env_id, {k: v for k, v in (env_config or {}).items() if k != "prev_action_reward"})
    try:
        return action_start(env.action_space)
    finally:
        env.close()


def _offset_actions(env: gym.Env) -> gym.Env:
    return ZeroBasedActions(env) if action_start(env.action_space) is not None else env


def _make_one(env_id: str, config: dict) -> gym.Env:
    config = dict(config)
    prev_action_reward = bool(config.pop("prev_action_reward", False))
    env = _offset_actions(_make_one_raw(env_id, config))
    if isinstance(env.observation_space, gym.spaces.Dict):  # one flat vector (unirl.spaces), masks last
        from unirl.spaces import FlattenDictObservation

        env = FlattenDictObservation(env)
    if prev_action_reward:  # the previous action and reward appended (unirl.pomdp)
        from unirl.pomdp import PreviousActionReward

        env = PreviousActionReward(env)
    return env


def _make_one_raw(env_id: str, config: dict) -> gym.Env:
    name = env_id.partition(":")[2] if ":" in env_id else env_id
    config = dict(config)
    if name.startswith("ALE/"):
        opts = {k: config.pop(k, v) for k, v in ATARI_DEFAULTS.items()}
        if opts["atari_preprocessing"]:
            from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation

            config.setdefault("frameskip", 1)  # AtariPreprocessing skips (and max-pools) itself
            try:
                env = gym.make(env_id, **config)
                env = AtariPreprocessing(env, noop_max=opts["noop_max"], frame_skip=opts["frame_skip"],
                                         screen_size=opts["screen_size"], terminal_on_life_loss=opts["episodic_life"],
                                         grayscale_obs=True, scale_obs=False)
            except gym.error.DependencyNotInstalled:
                raise _missing_extra("opencv-python-headless", "atari", env_id) from None
            if opts["clip_rewards"]:
                env = ClipRewardSign(env)
            if opts["frame_stack"] > 1:
                env = ChannelsLast(FrameStackObservation(env, opts["frame_stack"]))
            return env
    try:
        return gym.make(env_id, **config)
    except gym.error.DependencyNotInstalled as e:
        raise UnirlError(f"cannot make environment `{env_id}`: {e}") from None


def make_env(env_id: str, env_config: dict | None = None) -> gym.Env:
    """One environment as unirl's workers build it.

    Args:
        env_id: A Gymnasium id, "module:EnvId", or "module:Class" / "module:make_env" (see check_env_id).
        env_config: Keyword arguments for `gymnasium.make` (or the class or function).

    Returns:
        The env with unirl's wrappers (Atari preprocessing, zero-based actions, flattened Dict
        observations) applied.

    Raises:
        UnirlError: an unknown id (with a hint where an installed package registers it) or a missing extra.
    """
    check_env_id(env_id)
    try:
        return _make_one(env_id, env_config or {})
    except gym.error.Error as e:
        raise UnirlError(f"cannot make environment `{env_id}`: {e}") from None
    except TypeError as e:
        bad = _unexpected_keyword(e)
        if bad is None or bad not in (env_config or {}):
            raise
        takes = _env_arguments(env_id)
        raise UnirlError(f"env_config key `{bad}` is not an argument of environment `{env_id}`."
                         + (did_you_mean(bad, takes) + f" It takes: {', '.join(takes)}." if takes else "")) from None


def _unexpected_keyword(e: TypeError) -> str | None:
    import re

    m = re.search(r"unexpected keyword argument '([^']+)'", str(e))
    return m.group(1) if m else None


def _env_arguments(env_id: str) -> list[str]:
    """The keyword arguments an env's entry point takes (those gymnasium.make passes on), or []."""
    import inspect

    try:
        entry = gym.spec(env_id).entry_point
        if isinstance(entry, str):
            from gymnasium.envs.registration import load_env_creator

            entry = load_env_creator(entry)
        params = inspect.signature(entry).parameters.values()
    except Exception:
        return []
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"]


def make_vector_env(env_id: str, num_envs: int, env_config: dict | None = None) -> gym.vector.VectorEnv:
    """A synchronous vector env that resets finished sub-envs in the same step (final obs in infos)."""
    check_env_id(env_id)
    config = dict(env_config or {})
    return gym.vector.SyncVectorEnv(
        [lambda: _make_one(env_id, config) for _ in range(num_envs)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )


def spaces(env_id: str, env_config: dict | None = None):
    """(observation space, action space) of one env."""
    env = make_env(env_id, env_config)
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()


# -- custom environments in worker processes ------------------------------------------------------
#: Gymnasium id namespace for envs given to unirl as a class or a creator function.
CUSTOM_NAMESPACE = "unirl-custom"


def register_custom_env(creator) -> str:
    """Register a gym.Env subclass or a creator function (called with env_config as keyword
    arguments) with Gymnasium and return its id, `unirl-custom/<module>.<name>-v0`. Worker
    processes get it with their specs (see env_payload), whatever the backend."""
    import re

    if not callable(creator):
        raise UnirlError(f"an environment must be a Gymnasium id, \"module:Class\", a gym.Env class or a "
                         f"function returning an env, got {creator!r}.")
    name = re.sub(r"[^\w.]", "_", f"{getattr(creator, '__module__', 'env')}.{getattr(creator, '__qualname__', 'env')}")
    env_id = f"{CUSTOM_NAMESPACE}/{name}-v0"
    if env_id not in gym.registry or gym.registry[env_id].entry_point is not creator:
        if env_id in gym.registry:
            del gym.registry[env_id]
        gym.register(env_id, entry_point=creator)
    return env_id


def env_payload(env_id: str) -> bytes | None:
    """The EnvSpec of a registered env id, cloudpickled, for worker processes whose Gymnasium
    registry lacks it (an env registered in the user's script). An entry point in `__main__` travels
    by value; one in an importable module by reference. None for "module:EnvId" ids (each worker
    imports the module) and ids Gymnasium does not know here."""
    import dataclasses
    import sys

    if ":" in env_id or env_id not in gym.registry:
        return None
    import cloudpickle

    spec = gym.registry[env_id]
    entry = spec.entry_point
    if isinstance(entry, str) and entry.partition(":")[0] in ("__main__", "__mp_main__"):
        entry = getattr(sys.modules[entry.partition(":")[0]], entry.partition(":")[2], entry)
    try:
        return cloudpickle.dumps(dataclasses.replace(spec, entry_point=entry))
    except Exception as e:  # an entry point that cannot travel: say so where the run is started
        raise UnirlError(f"environment `{env_id}` cannot be sent to worker processes: its entry point "
                         f"{entry!r} does not pickle ({e}).") from None


def ensure_env_registered(payload: bytes | None) -> None:
    """In a worker: register the env the driver sent (env_payload) unless this process knows its id."""
    if payload is None:
        return
    import cloudpickle

    try:
        spec = cloudpickle.loads(payload)
    except Exception as e:
        raise UnirlError(f"a worker process cannot rebuild the environment sent by the driver: {e} "
                         "(its module must be importable in the workers, e.g. on PYTHONPATH).") from None
    # an env of a known family (ALE/..., MinAtar/...): its package registers it on import; registering
    # the driver's copy first would make that import override it, with a Gymnasium warning per worker
    _load_family(spec.id)
    if spec.id not in gym.registry:
        gym.registry[spec.id] = spec
