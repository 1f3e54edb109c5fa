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
