"""Gymnasium environments: building vector envs seeded by global env index, with clear errors."""
from __future__ import annotations

import gymnasium as gym

from unirl.errors import UnirlError, did_you_mean
from unirl.loading import import_module


def check_env_id(env_id: str) -> None:
    """Raise a one-sentence error if Gymnasium does not know `env_id` ("EnvId", or "module:EnvId"
    whose module registers the env on import)."""
    name = env_id
    if ":" in env_id:
        module, _, name = env_id.partition(":")
        import_module(module, "environment", env_id)
    if name in gym.registry:
        return
    raise UnirlError(f"unknown environment `{env_id}`: Gymnasium has no env with that id."
                     + did_you_mean(name, gym.registry.keys()))


def make_env(env_id: str, env_config: dict | None = None) -> gym.Env:
    check_env_id(env_id)
    try:
        return gym.make(env_id, **(env_config or {}))
    except gym.error.Error as e:
        raise UnirlError(f"cannot make environment `{env_id}`: {e}") from None


def make_vector_env(env_id: str, num_envs: int, env_config: dict | None = None) -> gym.vector.VectorEnv:
    """A synchronous vector env that resets finished sub-envs in the same step (final obs in infos)."""
    check_env_id(env_id)
    config = dict(env_config or {})
    return gym.vector.SyncVectorEnv(
        [lambda: gym.make(env_id, **config) for _ in range(num_envs)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )


def spaces(env_id: str, env_config: dict | None = None):
    """(observation space, action space) of one env."""
    env = make_env(env_id, env_config)
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()
