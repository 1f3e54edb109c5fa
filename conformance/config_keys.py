"""Level 1's "config keys" check: every config key an algorithm accepts is read by it, or is declared inert.

A key that is accepted (validated, saved in checkpoints, shown in `unirl train --help`) but never
read is a silent no-op: a user who tunes it changes nothing. The check builds the algorithm on
the local backend with its conformance `run_config` and a config object that records every read
of a dataclass field (after the config is built and validated: validation alone is not use),
trains 2 iterations, saves a checkpoint and evaluates one episode, and lists the fields never read.

Keys that a short run cannot read are declared, with the reason:

- on the algorithm's class, `inert_config_keys = {"key": "why"}` (its own keys; a subclass may add to
  its base class's dict);
- here, in INERT_BASE_KEYS, for keys of the shared base configs (unirl.config: AlgorithmConfig and
  the asynchronous bases) that only the CLI, a longer run or a fault reads. An entry may name a
  *gate*: the key is inert only if the gate key was read (`lr_final` is read only when
  `lr_decay_timesteps` is set, so an algorithm that never reads `lr_decay_timesteps` still gets
  both flagged).

Reads are recorded in this process only, which is why the check runs on the local backend (its
workers live here).
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
import time
import traceback

#: Keys of the shared base configs that a 2-iteration run on the local backend does not read, why, and the
#: key that must have been read for the exemption to hold (None: none).
INERT_BASE_KEYS: dict[str, tuple[str, str | None]] = {
    "lr_final": ("read only when `lr_decay_timesteps` is set (the rate the decay ends at)", "lr_decay_timesteps"),
    "evaluation_num_episodes": ("read by `unirl train`'s final evaluation and by `evaluate()` without a count; "
                                "the check evaluates one episode", None),
}

#: Iterations the check trains before it saves and evaluates.
ITERATIONS = 2


def recording_config_class(config_class):
    """A subclass of `config_class` whose instances record reads of its dataclass fields in `reads` (a set on the
    class), from the moment `from_dict` has built and validated one; `to_dict`, `repr` and `==` do not count."""
    names = frozenset(f.name for f in dataclasses.fields(config_class))

    def __getattribute__(self, name):
        if name in names and object.__getattribute__(self, "__dict__").get("_recording"):
            type(self).reads.add(name)
        return object.__getattribute__(self, name)

    def quietly(method):
        def wrapped(self, *args, **kwargs):
            d = object.__getattribute__(self, "__dict__")
            was = d.get("_recording", False)
            d["_recording"] = False
            try:
                return method(self, *args, **kwargs)
            finally:
                d["_recording"] = was
        wrapped.__name__ = method.__name__
        return wrapped

    @classmethod
    def from_dict(cls, d=None, **overrides):
        config = super(recording, cls).from_dict(d, **overrides)
        object.__getattribute__(config, "__dict__")["_recording"] = True
        return config

    recording = type(config_class.__name__, (config_class,), {
        "__getattribute__": __getattribute__, "from_dict": from_dict, "reads": set(), "field_set": names,
        "to_dict": quietly(config_class.to_dict), "__repr__": quietly(config_class.__repr__),
        "__eq__": quietly(config_class.__eq__), "__hash__": None,
        "__module__": config_class.__module__, "__qualname__": config_class.__qualname__})
    return recording


def declared_inert(algo_cls) -> dict[str, str]:
    """The algorithm's `inert_config_keys` (key -> why), merged over its class hierarchy (a subclass wins)."""
    out: dict[str, str] = {}
    for klass in reversed(algo_cls.__mro__):
        keys = vars(klass).get("inert_config_keys")
        if keys:
            out.update(keys)
    return out


def unread_keys(algo_name: str, config: dict, iterations: int = ITERATIONS) -> tuple[list[str], set, list[str]]:
    """Build `algo_name` with `config` and a recording config, train, save, evaluate one episode, stop.

    Returns (every field never read, in declaration order; the keys read; every field of the config class)."""
    from unirl.registry import get_algorithm_class

    cls = get_algorithm_class(algo_name)
    recording = recording_config_class(cls.config_class)
    probe = type(cls.__name__, (cls,), {"config_class": recording, "__module__": cls.__module__,
                                        "__qualname__": cls.__qualname__})
    algo = probe(config)
    try:
        for _ in range(iterations):
            algo.train()
        with tempfile.TemporaryDirectory(prefix="unirl-config-keys-") as tmp:
            algo.save(os.path.join(tmp, "checkpoint"))
        algo.evaluate(1)
    finally:
        algo.stop()
    fields = [f.name for f in dataclasses.fields(cls.config_class)]
    return [k for k in fields if k not in recording.reads], set(recording.reads), fields


def config_keys_check(algo_name: str, config: dict) -> dict:
    """The suite's record (level 1, "config keys") for one algorithm, built with `config` on the local backend."""
    from unirl.config import AlgorithmConfig, AsyncConfig, FragmentConfig
    from unirl.conformance.report import FAILED, PASSED
    from unirl.registry import get_algorithm_class

    t0 = time.perf_counter()
    record = dict(level=1, check="config keys", algo=algo_name, framework=None, backend=None)
    try:
        cls = get_algorithm_class(algo_name)
        unread, reads, fields = unread_keys(algo_name, config)
    except Exception as e:
        message = f"{type(e).__name__}: {e}".strip().splitlines()[0]
        return dict(record, status=FAILED, duration_s=time.perf_counter() - t0,
                    message=f"the run raised {message}", difference={"traceback": traceback.format_exc(limit=8)})
    mine = declared_inert(cls)
    base_fields = {f.name for c in (AlgorithmConfig, AsyncConfig, FragmentConfig) for f in dataclasses.fields(c)}
    exempt, flagged = {}, []
    for key in unread:
        if key in mine:
            exempt[key] = mine[key]
        elif key in INERT_BASE_KEYS and key in base_fields and (
                INERT_BASE_KEYS[key][1] is None or INERT_BASE_KEYS[key][1] in reads):
            exempt[key] = INERT_BASE_KEYS[key][0]
        else:
            flagged.append(key)
    stale = sorted(k for k in mine if k not in fields)
    difference = {"unread": unread, "flagged": flagged, "inert": exempt, "fields": len(fields),
                  "read": len(fields) - len(unread)}
    duration = time.perf_counter() - t0
    if stale:
        return dict(record, status=FAILED, duration_s=duration, difference=difference,
                    message=f"{cls.__name__}.inert_config_keys names keys its config does not have: "
                            + ", ".join(f"`{k}`" for k in stale))
    if flagged:
        return dict(record, status=FAILED, duration_s=duration, difference=difference,
                    message="config keys never read and not declared inert: " + ", ".join(f"`{k}`" for k in flagged)
                            + f" (built on the local backend, {ITERATIONS} train() iterations, save() and "
                              "evaluate(1)); read them, remove them, or declare them in the algorithm's "
                              "`inert_config_keys = {\"key\": \"why\"}`")
    return dict(record, status=PASSED, duration_s=duration, difference=difference,
                message=f"{len(fields) - len(unread)} of {len(fields)} config keys read"
                        + (f"; inert: {', '.join(sorted(exempt))}" if exempt else ""))
