"""What an algorithm tells the conformance suite about itself: its small configs, its levels and its reference score.

An algorithm class sets `conformance = ConformanceSpec(...)`; the suite (unirl.conformance)
reads nothing else about it, so a new algorithm, in unirl or outside, joins the suite by
declaring this.
"""
from __future__ import annotations

from dataclasses import dataclass, field

#: Synchronous algorithms are bit-identical across backends and worker counts (level 3).
BIT_IDENTICAL = "bit-identical"
#: Asynchronous ones are replayable: a recorded arrival schedule replayed on any backend gives the same bits.
REPLAYABLE = "replayable"


@dataclass(frozen=True)
class ConformanceSpec:
    """The suite's view of one algorithm.

    `run_config` and `curve_config` are algorithm configs with `total_envs` in place of
    `num_envs_per_worker` (the suite splits the envs over the worker counts it checks; it must be
    divisible by 1, 2, 3 and 4, so 12 or 24). `learning` is level 5's target:
    {"config": {...}, "score": float, "budget": env steps, "eval_episodes": int, optionally "eval_every": env
    steps between greedy evaluations whatever the training return (otherwise evaluated once it reaches the score)}.
    """

    run_config: dict
    curve_config: dict | None = None
    learning: dict | None = None
    #: BIT_IDENTICAL (level 3 compares backends and worker counts) or REPLAYABLE (level 3
    #: replays the reference run's recorded arrival schedule on every backend and worker count).
    reproducibility: str = BIT_IDENTICAL
    #: Level 4 (a): the algorithm has a loss whose gradient the frameworks must agree on.
    has_loss: bool = True
    #: Levels the suite runs for this algorithm (some families have no gradient, say).
    levels: tuple = (1, 2, 3, 4, 5)
    #: Iterations of each level-2/3 run in quick mode (full mode runs more).
    quick_iterations: int = 3
    notes: str = field(default="", compare=False)
    #: Further small configs the suite checks as algorithms of their own, named "ALGO[variant]"
    #: (PPO[pendulum]: continuous actions; PPO[minatar]: image observations): variant name ->
    #: ConformanceSpec. `unirl conformance --variants` adds them all; `--algo PPO[minatar]` picks one.
    variants: dict = field(default_factory=dict, compare=False)


_VARIANT_CLASSES: dict = {}


def split_variant(name: str) -> tuple[str, str | None]:
    """("PPO", "pendulum") for "PPO[pendulum]"; (name, None) for a name without a variant."""
    if name.endswith("]") and "[" in name:
        base, _, variant = name[:-1].partition("[")
        return base, variant
    return name, None


def variant_class(cls, variant: str):
    """`cls` with its conformance spec's variant `variant` as its spec: a subclass that changes nothing else
    (its runs are the algorithm's own), so the suite checks the variant like any algorithm."""
    from unirl.errors import UnirlError

    spec = getattr(cls, "conformance", None)
    variants = getattr(spec, "variants", None) or {}
    if variant not in variants:
        have = ", ".join(f"{cls.name}[{v}]" for v in variants) or "none"
        raise UnirlError(f"the algorithm `{cls.name}` has no conformance variant `{variant}` (it has {have}).")
    key = (cls, variant)
    if key not in _VARIANT_CLASSES:
        _VARIANT_CLASSES[key] = type(f"{cls.__name__}[{variant}]", (cls,),
                                     {"conformance": variants[variant], "__module__": cls.__module__,
                                      "__doc__": cls.__doc__})
    return _VARIANT_CLASSES[key]
