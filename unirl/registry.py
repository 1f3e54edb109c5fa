"""Algorithm registry: names to import paths, loaded only when asked for."""
from __future__ import annotations

from unirl.loading import load

ALGORITHMS = {
    "PPO": "unirl.algorithms.ppo:PPO",
    "DQN": "unirl.algorithms.dqn:DQN",
    "APEX": "unirl.algorithms.apex:ApeX",
    "ES": "unirl.algorithms.es:ES",
    "ARS": "unirl.algorithms.ars:ARS",
    "A2C": "unirl.algorithms.a2c:A2C",
    "A3C": "unirl.algorithms.a3c:A3C",
    "IMPALA": "unirl.algorithms.impala:IMPALA",
    "ASYNC_DQN": "unirl.algorithms.async_dqn:AsyncDQN",
    "APPO": "unirl.algorithms.appo:APPO",
    "SAC": "unirl.algorithms.sac:SAC",
    "TD3": "unirl.algorithms.td3:TD3",
    "APEX_TD3": "unirl.algorithms.apex_td3:ApeXTD3",
    "R2D2": "unirl.algorithms.r2d2:R2D2",
    "PETS": "unirl.algorithms.pets:PETS",
    "MBPO": "unirl.algorithms.mbpo:MBPO",
    "AlphaZero": "unirl.algorithms.alphazero:AlphaZero",
}


def canonical_name(name: str) -> str:
    """The registered spelling of an algorithm name given in any case ("ppo" -> "PPO"); others unchanged."""
    if not isinstance(name, str):
        from unirl.errors import UnirlError

        raise UnirlError(f"an algorithm is named by a string such as \"PPO\", got {name!r}.")
    if name in ALGORITHMS or ":" in name:
        return name
    return next((k for k in ALGORITHMS if k.lower() == name.lower()), name)


def get_algorithm_class(name: str):
    """The Algorithm class registered as `name` (or given as "pkg.module:Class").

    "NAME[variant]" is that class with one of its conformance spec's variants as its spec
    (unirl.conformance_spec.variant_class): the same algorithm, checked on another small config."""
    from unirl.conformance_spec import split_variant, variant_class

    base, variant = split_variant(name)
    cls = load(canonical_name(base), ALGORITHMS, "algorithm")
    return cls if variant is None else variant_class(cls, variant)


def checkpoint_algorithm_name(state: dict) -> str | None:
    """The registered name that restores the algorithm a checkpoint's state names, or None if its class is
    outside unirl's registry.

    state["algorithm"] is the saving class's `name` and state["algorithm_class"] (absent in older
    checkpoints) its import path "module:QualName". The registered name is used when the class is
    the registered one or one of its conformance variants ("unirl.algorithms.ppo:PPO[pendulum]", a
    subclass that changes nothing a checkpoint holds); a plugin's class, or a registered name
    claimed by another class, gives None."""
    from unirl.conformance_spec import split_variant

    name, path = state.get("algorithm"), state.get("algorithm_class")
    if not isinstance(name, str) or split_variant(name)[0] not in ALGORITHMS:
        return None
    if path is None:
        return name
    if not isinstance(path, str) or split_variant(path)[0] != ALGORITHMS[split_variant(name)[0]]:
        return None
    return split_variant(name)[0]


def checkpoint_algorithm_class(state: dict):
    """The Algorithm class that restores a checkpoint's state: by its registered name (see
    checkpoint_algorithm_name), else by its import path state["algorithm_class"] (a plugin's class;
    unirl.checkpoint.check_trusted refuses it unless trusted), else by state["algorithm"] itself."""
    name = checkpoint_algorithm_name(state)
    if name is not None:
        return get_algorithm_class(name)
    path, name = state.get("algorithm_class"), state.get("algorithm")
    if isinstance(path, str) and ":" in path:
        return get_algorithm_class(path)
    if isinstance(name, str) and ":" not in name and canonical_name(name) not in ALGORITHMS:
        from unirl.errors import UnirlError

        raise UnirlError(f"the checkpoint's algorithm `{name}` is not one of unirl's registered algorithms and the "
                         "checkpoint does not say which class saved it (it predates `algorithm_class`); load it "
                         "with that class's from_checkpoint(path).")
    return get_algorithm_class(name)
