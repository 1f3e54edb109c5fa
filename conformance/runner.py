"""The conformance suite's runner: plans the checks for the asked combinations, runs them level by level, reports.

Usage::

    from unirl.conformance.runner import SuiteOptions, run_suite
    report = run_suite(SuiteOptions(frameworks=["torch", "mypkg.adapter:MyAdapter"], backends=["local"],
                                    quick=True))
    assert not report.failed, [r.line() for r in report.failed]

Algorithms come from unirl's own registry (`unirl.registry.ALGORITHMS`, or an import path
"pkg.module:Class"), and the suite reads nothing about one but its class's `conformance`
(a `unirl.conformance_spec.ConformanceSpec`): its small configs, its levels, its reproducibility
kind and its reference score. An algorithm without one is reported unavailable, with the reason.

Runs are shared between levels where that is valid: the reference run (local backend, one
worker) is run 1 of local's level-2 pair and the reference of every level-3 comparison; each
other backend's level-3 run with REPEAT_WORKERS workers is run 1 of its level-2 pair.

REPLAYABLE (asynchronous) algorithms: for each worker count n, the free-running run on the local
backend with n workers is the reference; its recorded arrival schedule
(`get_state()[1]["arrival_schedule"]`) is replayed (config key `arrival_schedule`) on every
backend with n workers, and each replay must be bit-identical to it (level 3); two replays on
one backend must be bit-identical (level 2).

Two checks are about an algorithm rather than its runs' bits: level 1's "config keys" (every config key
the algorithm accepts is read, or declared inert; unirl.conformance.config_keys) and level 2's "worker
updates" (algorithms whose workers compute learning updates, i.e. whose execution pattern has an
`audit` mode: one run per framework and backend with every update recomputed on the driver from the
parameter sets the worker was sent, and compared bit for bit).
"""
from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field, replace

from unirl.conformance.report import FAILED, PASSED, SKIPPED, UNAVAILABLE, CheckResult, Report
from unirl.conformance.runs import RunRecord, RunSpec, compare_runs, record_run

ALL_FRAMEWORKS = ("torch", "tf", "jax")
ALL_BACKENDS = ("local", "multiprocessing", "ray", "mpi")
REFERENCE_BACKEND = "local"
#: Level 4 compares every framework with this one (when it is installed).
REFERENCE_FRAMEWORK = "torch"

#: The worker count of each non-reference backend's level-2 pair (it crosses process boundaries).
REPEAT_WORKERS = 2


def registered_algorithms(with_spec: bool = True, variants: bool = False) -> list[str]:
    """The names in unirl's algorithm registry (those whose class declares a conformance spec, by default);
    with `variants`, each one's conformance variants too ("PPO[pendulum]", after "PPO")."""
    from unirl.registry import ALGORITHMS, get_algorithm_class

    names = []
    for name in ALGORITHMS:
        try:
            cls = get_algorithm_class(name)
        except Exception:
            if not with_spec:
                names.append(name)
            continue
        spec = getattr(cls, "conformance", None)
        if not with_spec or spec is not None:
            names.append(name)
        if variants and spec is not None:
            names += [f"{name}[{v}]" for v in getattr(spec, "variants", None) or {}]
    return names


@dataclass(frozen=True)
class Mode:
    """How much each level runs; QUICK and FULL below."""

    name: str
    levels: tuple
    #: Training iterations of each level-2/3 run (None: the algorithm's spec's `quick_iterations`).
    iterations: int | None
    #: Worker counts checked on every backend (local with 1 is the reference).
    worker_counts: tuple
    #: Level 4: the scale-relative tolerance of loss, gradient, stats and stepped weights between frameworks.
    grad_rtol: float
    #: Level 4: seeds and iterations of the learning-curve runs, the equivalence margin as a fraction
    #: of the reference framework's mean score, and the TOST level.
    curve_seeds: tuple
    curve_iterations: int
    curve_margin: float
    curve_alpha: float


QUICK = Mode("quick", (1, 2, 3, 4), iterations=None, worker_counts=(1, 2, 3, 4),
             grad_rtol=1e-5, curve_seeds=(0, 1, 2, 3), curve_iterations=8, curve_margin=0.10, curve_alpha=0.05)
FULL = Mode("full", (1, 2, 3, 4, 5), iterations=5, worker_counts=(1, 2, 3, 4),
            grad_rtol=1e-5, curve_seeds=(0, 1, 2, 3, 4, 5, 6, 7), curve_iterations=30, curve_margin=0.10,
            curve_alpha=0.05)


@dataclass
class SuiteOptions:
    """What to check: names or import paths ("pkg.module:Class") of algorithms, frameworks and backends.

    `algos=None` (the default): every registered algorithm whose class declares a conformance spec.
    """

    algos: list | None = None
    frameworks: list = field(default_factory=lambda: list(ALL_FRAMEWORKS))
    backends: list = field(default_factory=lambda: list(ALL_BACKENDS))
    quick: bool = True
    #: Only these levels (default: all of the mode's).
    levels: tuple | None = None

    @property
    def mode(self) -> Mode:
        m = QUICK if self.quick else FULL
        return m if self.levels is None else replace(m, levels=tuple(sorted(set(self.levels))))


class Progress:
    """What the runner tells its caller as it goes (the CLI shows it with rich; the default is silent)."""

    def start(self, total: int) -> None:
        pass

    def step(self, description: str) -> None:
        """Work on `description` begins."""

    def advance(self, n: int = 1) -> None:
        pass

    def result(self, result: CheckResult) -> None:
        pass


def is_plugin(spec: str) -> bool:
    """An import path ("pkg.module:Class"), i.e. third-party code the user brought."""
    return ":" in spec


# -- availability ----------------------------------------------------------------------------
def framework_unavailable(spec: str) -> str | None:
    """Why this framework adapter cannot be loaded here, or None if it can."""
    from unirl.errors import UnirlError
    from unirl.frameworks import get_adapter

    try:
        get_adapter(spec)
    except UnirlError as e:
        return str(e)
    return None


def backend_unavailable(spec: str) -> str | None:
    """Why this backend cannot be loaded here, or None if it can."""
    from unirl.backends import get_backend_class
    from unirl.errors import UnirlError

    try:
        get_backend_class(spec)
    except UnirlError as e:
        return str(e)
    return None


def algo_unavailable(name: str) -> str | None:
    """Why this algorithm cannot be checked here (it cannot be loaded, or declares no conformance spec), or None."""
    from unirl.conformance_spec import ConformanceSpec
    from unirl.errors import UnirlError
    from unirl.registry import get_algorithm_class

    try:
        cls = get_algorithm_class(name)
    except UnirlError as e:
        return str(e)
    spec = getattr(cls, "conformance", None)
    if spec is None:
        return (f"the algorithm `{name}` declares no conformance spec: set "
                f"`conformance = ConformanceSpec(run_config=..., ...)` on its class (see docs/conformance.md) for the suite to check it.")
    if not isinstance(spec, ConformanceSpec):
        return f"the algorithm `{name}`'s `conformance` is a {type(spec).__name__}, not a unirl ConformanceSpec."
    total = spec.run_config.get("total_envs")
    if not isinstance(total, int) or total % 12:
        return (f"the algorithm `{name}`'s conformance run_config needs `total_envs` divisible by 1, 2, 3 and 4 "
                f"(12 or 24), got {total!r}.")
    env = spec.run_config.get("env")
    if isinstance(env, str):
        from unirl.config import AlgorithmConfig
        from unirl.env import spaces
        from unirl.multi_agent.env import EnvInfo, is_multi_agent_env

        try:  # an env behind a missing extra (MinAtar, Box2D, PettingZoo, ...) makes the config unavailable, not failed
            if cls.config_class.check_env is not AlgorithmConfig.check_env:  # an env of its own kind (games)
                cls.config_class(env=env, env_config=dict(spec.run_config.get("env_config") or {})).check_env()
            elif is_multi_agent_env(env):
                EnvInfo(env, spec.run_config.get("env_config"))
            else:
                spaces(env, spec.run_config.get("env_config"))
        except UnirlError as e:
            return str(e)
        except Exception:
            pass  # any other fault shows where it belongs: in the runs, as a failure
    return None


def algo_spec(name: str):
    """The ConformanceSpec of an algorithm (a name or import path)."""
    from unirl.registry import get_algorithm_class

    return get_algorithm_class(name).conformance


def audits_worker_updates(name: str) -> bool:
    """Whether the algorithm's workers compute learning updates that the driver can recompute: its declared
    execution pattern has an `audit` mode (unirl.execution.loops.AsyncGradients)."""
    from unirl.registry import get_algorithm_class

    return hasattr(getattr(get_algorithm_class(name), "execution", None), "audit")


#: Level 2's "worker updates" runs recompute every audit-th update on the driver (1: every one).
AUDIT_EVERY = 1


# -- the suite -------------------------------------------------------------------------------
class Suite:
    """One run of the suite: availability, the planned runs, and every level's checks."""

    def __init__(self, options: SuiteOptions, progress: Progress | None = None):
        if options.algos is None:
            options = replace(options, algos=registered_algorithms())
        self.options = options
        self.mode = options.mode
        self.progress = progress or Progress()
        self.report = Report(list(options.algos), list(options.frameworks), list(options.backends), options.quick)
        #: Plugins (import paths) the user named that cannot be loaded: failed at level 1, left out elsewhere.
        self.load_failed: set = set()
        self.records: dict[RunSpec, RunRecord] = {}
        self.unavailable: dict[tuple, str] = {}

    # bookkeeping ------------------------------------------------------------------------------
    def add(self, level, check, algo, framework, backend, status, duration_s=0.0, message="", difference=None,
            num_workers=None) -> CheckResult:
        r = self.report.add(CheckResult(level, check, algo, framework, backend, status, duration_s, message,
                                        difference, num_workers))
        self.progress.result(r)
        return r

    def _probe(self) -> None:
        o = self.options
        for a in o.algos:
            self.progress.step(f"loading algorithm {a}")
            self.unavailable[("algo", a)] = algo_unavailable(a)
        for f in o.frameworks:
            self.progress.step(f"loading framework {f}")
            self.unavailable[("framework", f)] = framework_unavailable(f)
        for b in set(o.backends) | {REFERENCE_BACKEND}:
            self.unavailable[("backend", b)] = backend_unavailable(b)
        # torch is level 4's reference even when only a plugin adapter is checked; without torch, the first one.
        if ("framework", REFERENCE_FRAMEWORK) not in self.unavailable:
            self.unavailable[("framework", REFERENCE_FRAMEWORK)] = framework_unavailable(REFERENCE_FRAMEWORK)
        ref = REFERENCE_FRAMEWORK if not self.unavailable[("framework", REFERENCE_FRAMEWORK)] else \
            next((f for f in o.frameworks if not self.unavailable[("framework", f)]), None)
        self.report.reference_framework = ref
        for (kind, name), reason in self.unavailable.items():
            if kind == "algo" and reason and is_plugin(name):
                from unirl.errors import UnirlError
                from unirl.registry import get_algorithm_class

                try:
                    get_algorithm_class(name)
                    continue  # it loads, and is unavailable for want of a conformance spec
                except UnirlError:
                    pass
            if reason and is_plugin(name):
                self.load_failed.add(name)
                # A plugin the user named that cannot be imported is their failure, not a gap of unirl.
                self.add(1, f"api/{kind}/load", name if kind == "algo" else None, name if kind == "framework" else None,
                         name if kind == "backend" else None, FAILED, message=reason)

    def why_unavailable(self, algo=None, framework=None, backend=None) -> str | None:
        for key in (("algo", algo), ("framework", framework), ("backend", backend)):
            if key[1] is not None and self.unavailable.get(key):
                return self.unavailable[key]
        return None

    # planning ---------------------------------------------------------------------------------
    def iterations(self, algo: str) -> int:
        return self.mode.iterations or algo_spec(algo).quick_iterations

    def algo_levels(self, algo: str) -> set:
        """The mode's levels that this algorithm's spec asks for."""
        return set(self.mode.levels) & set(algo_spec(algo).levels)

    def replayable(self, algo: str) -> bool:
        from unirl.conformance_spec import REPLAYABLE

        return algo_spec(algo).reproducibility == REPLAYABLE

    def planned_runs(self) -> list[RunSpec]:
        """Every level-2/3 run, reference runs first; combinations that are unavailable are left out.

        BIT_IDENTICAL: the reference (local, 1 worker), its repeat, and every backend x worker count
        (plus a repeat of each other backend's REPEAT_WORKERS run). REPLAYABLE: one free-running reference
        per worker count on local, then every backend x worker count replaying the matching reference's
        schedule (plus a repeat of each backend's replay at the first worker count).
        """
        o = self.options
        specs = []
        for a in o.algos:
            if self.why_unavailable(algo=a):
                continue
            specs += self.audit_runs(a)
            levels = self.algo_levels(a)
            if not ({2, 3} & levels):
                continue
            cfg, its, counts = algo_spec(a).run_config, self.iterations(a), self.mode.worker_counts
            for f in o.frameworks:
                if self.why_unavailable(framework=f) or self.why_unavailable(backend=REFERENCE_BACKEND):
                    continue
                backends = [b for b in o.backends if not self.why_unavailable(backend=b)]
                if self.replayable(a):
                    specs += [RunSpec.make(a, f, REFERENCE_BACKEND, n, its, cfg) for n in counts]
                    for b in backends:
                        mine = [RunSpec.make(a, f, b, n, its, cfg, replay=True) for n in counts] if 3 in levels else \
                            [RunSpec.make(a, f, b, counts[0], its, cfg, replay=True)]
                        specs += mine
                        if 2 in levels:
                            specs.append(replace(mine[0], repeat=1))
                    continue
                specs.append(RunSpec.make(a, f, REFERENCE_BACKEND, 1, its, cfg))
                if 2 in levels and REFERENCE_BACKEND in o.backends:
                    specs.append(RunSpec.make(a, f, REFERENCE_BACKEND, 1, its, cfg, repeat=1))
                for b in backends:
                    if 3 in levels:
                        specs += [RunSpec.make(a, f, b, n, its, cfg) for n in counts
                                  if (b, n) != (REFERENCE_BACKEND, 1)]
                    if 2 in levels and b != REFERENCE_BACKEND:
                        pair = REPEAT_WORKERS if REPEAT_WORKERS in counts else counts[0]
                        specs.append(RunSpec.make(a, f, b, pair, its, cfg))
                        specs.append(RunSpec.make(a, f, b, pair, its, cfg, repeat=1))
        return list(dict.fromkeys(specs))

    def audit_workers(self) -> int:
        counts = self.mode.worker_counts
        return REPEAT_WORKERS if REPEAT_WORKERS in counts else counts[0]

    def audit_runs(self, algo: str) -> list[RunSpec]:
        """Level 2's "worker updates" runs of an algorithm whose workers compute updates: one per available
        framework x backend, REPEAT_WORKERS workers, free-running, every update audited. They run whenever the
        mode runs level 2, whatever the spec's `levels` (they check the workers' arithmetic, not repeatability)."""
        if 2 not in self.mode.levels or self.why_unavailable(algo=algo) or not audits_worker_updates(algo):
            return []
        cfg, its = algo_spec(algo).run_config, self.iterations(algo)
        return [RunSpec.make(algo, f, b, self.audit_workers(), its, cfg, audit=AUDIT_EVERY)
                for f in self.options.frameworks if not self.why_unavailable(framework=f)
                for b in self.options.backends if not self.why_unavailable(backend=b)]

    def reference_of(self, spec: RunSpec) -> RunSpec:
        """The run `spec` is compared with at level 3 (and, for a replay, whose schedule it replays)."""
        n = spec.num_workers if spec.replay else 1
        return replace(spec, backend=REFERENCE_BACKEND, num_workers=n, repeat=0, replay=False, audit=0)

    def schedule_for(self, spec: RunSpec):
        """The arrival schedule a replaying run replays: the one its free-running reference recorded."""
        if not spec.replay:
            return None
        ref = self.records.get(self.reference_of(spec))
        return None if ref is None else ref.schedule

    # running ----------------------------------------------------------------------------------
    def run_all(self, specs: list[RunSpec]) -> None:
        """Record every run and run level 1's backend checks: the reference backend's in this process, each other
        backend's in one child job (isolated and time-limited; launched under mpiexec for MPI)."""
        from unirl.conformance.api_checks import backend_api_checks
        from unirl.conformance.launch import code_fingerprint, record_runs_in_child

        code = code_fingerprint()  # before the local runs: a child must run this code, not a later edit of it
        api = 1 in self.mode.levels
        for s in sorted((s for s in specs if s.backend == REFERENCE_BACKEND), key=lambda s: s.replay):
            self.progress.step(f"run {s.label}" + (" (again)" if s.repeat else ""))
            self.records[s] = record_run(s, self.schedule_for(s))
            self.progress.advance()
        for b in self._backends_to_check():
            if b == REFERENCE_BACKEND:
                if api:
                    self.progress.step(f"API checks of backend {b}")
                    for r in backend_api_checks(b):
                        self.add(**r)
                    self.progress.advance()
                continue
            group = [s for s in specs if s.backend == b]
            if not group and not api:
                continue
            self.progress.step(f"{b}: {len(group)} runs" + (" and the API checks" if api else "") + " (child job)")

            def arrived(spec, record, backend=b):
                self.progress.advance()
                self.progress.step(f"{backend}: recorded {spec.label}" + (" (again)" if spec.repeat else ""))

            schedules = {s: self.schedule_for(s) for s in group if s.replay}
            records, api_records = record_runs_in_child(b, group, arrived, api_checks=api, schedules=schedules,
                                                        code=code)
            self.records.update(records)
            for r in api_records or []:
                self.add(**r)
            if api:
                self.progress.advance()

    def _backends_to_check(self) -> list[str]:
        return [b for b in self.options.backends if not self.why_unavailable(backend=b)]

    # level 1 ----------------------------------------------------------------------------------
    def level1_frameworks(self) -> None:
        """Framework adapter checks here; the backends' level-1 checks run with their runs (see run_all)."""
        from unirl.conformance.api_checks import framework_api_checks

        for f in self.options.frameworks:
            reason = self.why_unavailable(framework=f)
            if reason:
                if not is_plugin(f):
                    self.add(1, "api/framework", None, f, None, UNAVAILABLE, message=reason)
                continue
            self.progress.step(f"API checks of framework {f}")
            for r in framework_api_checks(f):
                self.add(**r)
            self.progress.advance()
        for b in self.options.backends:
            reason = self.why_unavailable(backend=b)
            if reason and not is_plugin(b):
                self.add(1, "api/backend", None, None, b, UNAVAILABLE, message=reason)

    # levels 2 and 3 ---------------------------------------------------------------------------
    def _compare(self, level, check, ref: RunSpec, other: RunSpec) -> None:
        a, f, b = other.algo, other.framework, other.backend
        rr, ro = self.records.get(ref), self.records.get(other)
        duration = (ro.duration_s if ro else 0.0) + (rr.duration_s if rr and level == 2 else 0.0)
        if rr is None or ro is None:
            self.add(level, check, a, f, b, FAILED, duration, "the run was not recorded", num_workers=other.num_workers)
            return
        for rec, role in ((ro, "run"), (rr, "reference run")):
            if rec.error:
                self.add(level, check, a, f, b, FAILED, duration,
                         f"the {role} {rec.spec.label} failed: {rec.error}", num_workers=other.num_workers)
                return
        diff = compare_runs(rr, ro)
        if diff is None:
            self.add(level, check, a, f, b, PASSED, duration,
                     f"{other.label} bit-identical to {ref.label} over {len(ro.results)} iterations",
                     num_workers=other.num_workers)
        else:
            self.add(level, check, a, f, b, FAILED, duration, diff.message(), diff.as_dict(),
                     num_workers=other.num_workers)

    def levels_2_and_3(self, specs: list[RunSpec]) -> None:
        o = self.options
        for a in o.algos:
            unavailable = self.why_unavailable(algo=a)
            levels = set(self.mode.levels) & {2, 3}
            if not unavailable:
                for level in sorted(levels - self.algo_levels(a)):
                    self.add(level, "repeatability" if level == 2 else "invariance", a, None, None, SKIPPED,
                             message=f"{a}'s conformance spec leaves out level {level}")
                levels &= self.algo_levels(a)
            for f in o.frameworks:
                for b in o.backends:
                    reason = self.why_unavailable(a, f, b)
                    if reason:
                        # A plugin that cannot be loaded has already failed level 1's load check.
                        if not {a, f, b} & self.load_failed:
                            for level in sorted(levels):
                                self.add(level, "repeatability" if level == 2 else "invariance", a, f, b,
                                         UNAVAILABLE, message=reason)
                        continue
                    mine = [s for s in specs if (s.algo, s.framework, s.backend) == (a, f, b) and not s.audit]
                    if 2 in levels:
                        second = next(s for s in mine if s.repeat == 1)
                        self._compare(2, "repeatability", replace(second, repeat=0), second)
                    if 3 in levels:
                        replayable = self.replayable(a)
                        for s in mine:
                            ref = self.reference_of(s)
                            # REPLAYABLE: only replays are compared (free-running runs are references, not results)
                            if s.repeat == 0 and s != ref and (s.replay or not replayable):
                                self._compare(3, "invariance", ref, s)

    def worker_updates(self, specs: list[RunSpec]) -> None:
        """Level 2, "worker updates": in each audited run, every update a worker computed equals the driver's
        recomputation from the parameter sets it sent that worker (and the worker reports their versions)."""
        check = "worker updates"
        for a in self.options.algos:
            unavailable = self.why_unavailable(algo=a)
            if unavailable:
                if a not in self.load_failed:
                    self.add(2, check, a, None, None, UNAVAILABLE, message=unavailable)
                continue
            if not audits_worker_updates(a):
                continue  # its workers compute no learning updates: nothing to recompute (no record)
            for f in self.options.frameworks:
                for b in self.options.backends:
                    reason = self.why_unavailable(a, f, b)
                    if reason:
                        if not {a, f, b} & self.load_failed:
                            self.add(2, check, a, f, b, UNAVAILABLE, message=reason)
                        continue
                    spec = next((s for s in specs if s.audit and (s.algo, s.framework, s.backend) == (a, f, b)), None)
                    self._worker_updates_record(check, spec, a, f, b)

    def _worker_updates_record(self, check, spec, a, f, b) -> None:
        rec = self.records.get(spec) if spec is not None else None
        n = spec.num_workers if spec is not None else None
        if rec is None:
            self.add(2, check, a, f, b, FAILED, message="the audited run was not recorded", num_workers=n)
            return
        audit = rec.audit or {"audited": 0, "findings": []}
        findings = audit["findings"]
        difference = {"run": spec.label, "audited": audit["audited"], "findings": findings[:10],
                      "num_findings": len(findings), "iterations": len(rec.results)}
        if rec.error:
            difference["error"] = rec.error
        if findings:
            more = len(findings) - 1
            self.add(2, check, a, f, b, FAILED, rec.duration_s,
                     findings[0] + (f" (and {more} more of the {audit['audited']} audited updates)" if more else "")
                     + (f"; then the run failed: {rec.error.strip().splitlines()[0]}" if rec.error else ""),
                     difference, num_workers=n)
        elif rec.error:
            self.add(2, check, a, f, b, FAILED, rec.duration_s,
                     f"the run {spec.label} failed: {rec.error.strip().splitlines()[0]}", difference, num_workers=n)
        elif not audit["audited"]:
            self.add(2, check, a, f, b, FAILED, rec.duration_s,
                     f"no worker update was audited in {spec.label} ({len(rec.results)} iterations)", difference,
                     num_workers=n)
        else:
            self.add(2, check, a, f, b, PASSED, rec.duration_s,
                     f"{audit['audited']} worker updates recomputed on the driver from the parameter sets sent, "
                     f"bit-identical ({len(rec.results)} iterations)", difference, num_workers=n)

    def level1_config_keys(self) -> None:
        """Level 1, "config keys": every config key each algorithm accepts is read in a short run, or declared inert."""
        from unirl.conformance.config_keys import ITERATIONS, config_keys_check

        ref = self.report.reference_framework
        for a in self.options.algos:
            reason = self.why_unavailable(algo=a) or self.why_unavailable(backend=REFERENCE_BACKEND)
            if reason or ref is None:
                if a not in self.load_failed:
                    self.add(1, "config keys", a, None, None, UNAVAILABLE,
                             message=reason or "no reference framework is installed")
                continue
            self.progress.step(f"{a}: config keys read in {ITERATIONS} iterations on {REFERENCE_BACKEND} ({ref})")
            config = RunSpec.make(a, ref, REFERENCE_BACKEND, 1, ITERATIONS, algo_spec(a).run_config).algorithm_config()
            self.add(**config_keys_check(a, config))
            self.progress.advance()

    # level 4 ----------------------------------------------------------------------------------
    def level4(self) -> None:
        from unirl.conformance import framework_checks as fc
        from unirl.conformance.agreement import checkpoint_agreement, gradient_agreement, learning_curve_agreement

        ref = self.report.reference_framework
        for a in self.options.algos:
            others = [f for f in self.options.frameworks if f != ref]
            if self.why_unavailable(algo=a) or ref is None:
                if a not in self.load_failed:
                    for f in others:
                        self.add(4, "framework agreement", a, f, None, UNAVAILABLE,
                                 message=self.why_unavailable(algo=a) or "no reference framework is installed")
                continue
            spec = algo_spec(a)
            if 4 not in spec.levels:
                self.add(4, "framework agreement", a, None, None, SKIPPED,
                         message=f"{a}'s conformance spec leaves out level 4")
                continue
            usable = [f for f in others if not self.why_unavailable(framework=f)]
            for f in others:
                if f not in usable and not is_plugin(f):
                    self.add(4, "framework agreement", a, f, None, UNAVAILABLE,
                             message=self.why_unavailable(framework=f))
            if not spec.has_loss:
                for f in usable:
                    self.add(4, "loss_and_gradients", a, f, None, SKIPPED,
                             message=f"{a} declares no loss (has_loss=False): no gradient to compare")
            elif usable:
                self.progress.step(f"{a}: capturing a learning call with {ref}")
                try:
                    problem = fc.capture_problem(a, config=fc.small_config(a), framework=ref)
                except Exception as e:
                    problem = e
                for f in usable:
                    self.progress.step(f"{a}: loss and gradients of {f} vs {ref}")
                    self.add(**gradient_agreement(a, ref, f, self.mode.grad_rtol, problem))
                    self.progress.advance()
            self.progress.step(f"{a}: a {ref} checkpoint evaluated again and restored into {', '.join(usable) or 'no other framework'}")
            for r in checkpoint_agreement(a, ref, usable, self.mode.grad_rtol * 10, fc.small_config(a)):
                self.add(**r)
            if usable and spec.curve_config:
                for r in learning_curve_agreement(a, ref, usable, self.mode, spec.curve_config, self.progress):
                    self.add(**r)
            elif usable:
                for f in usable:
                    self.add(4, "learning_curves", a, f, None, SKIPPED, message=f"{a} declares no curve_config")

    # level 5 ----------------------------------------------------------------------------------
    def level5(self) -> None:
        from unirl.conformance.agreement import reaches_reference_score

        for a in self.options.algos:
            for f in self.options.frameworks:
                reason = self.why_unavailable(algo=a, framework=f)
                if reason:
                    if not {a, f} & self.load_failed:
                        self.add(5, "learning", a, f, None, UNAVAILABLE, message=reason)
                    continue
                target = algo_spec(a).learning
                if target is None or 5 not in algo_spec(a).levels:
                    self.add(5, "learning", a, f, None, SKIPPED,
                             message=f"{a}'s conformance spec declares no reference score (level 5)")
                    continue
                self.progress.step(f"{a}/{f}: learning {target['config'].get('env', '')} "
                                   f"(>= {target['score']:g} within {target['budget']:,} steps)")
                self.add(**reaches_reference_score(a, f, target))
                self.progress.advance()

    def total_steps(self, specs) -> int:
        m, o = self.mode, self.options
        n = len(specs)
        if 1 in m.levels:
            n += len(o.frameworks) + len(o.backends) + len(o.algos)
        if 4 in m.levels:
            n += (len(o.frameworks) - 1 + len(o.frameworks) * len(m.curve_seeds)) * len(o.algos)
        if 5 in m.levels:
            n += len(o.frameworks) * len(o.algos)
        return n

    def run(self) -> Report:
        t0 = time.perf_counter()
        self._probe()
        specs = self.planned_runs()
        self.progress.start(self.total_steps(specs))
        levels = self.mode.levels
        if 1 in levels:
            self._guard(1, self.level1_frameworks)
            self._guard(1, self.level1_config_keys)
        self._guard(2, lambda: self.run_all(specs))
        if {2, 3} & set(levels):
            self._guard(2, lambda: self.levels_2_and_3(specs))
        if 2 in levels:
            self._guard(2, lambda: self.worker_updates(specs))
        if 4 in levels:
            self._guard(4, self.level4)
        if 5 in levels:
            self._guard(5, self.level5)
        else:
            for a in self.options.algos:
                self.add(5, "learning", a, None, None, SKIPPED, message="level 5 runs in the full mode only")
        self.report.duration_s = time.perf_counter() - t0
        return self.report

    def _guard(self, level, fn) -> None:
        """Run one stage; an unexpected exception becomes a failed record instead of ending the suite."""
        try:
            fn()
        except Exception as e:
            self.add(level, "suite", None, None, None, FAILED,
                     message=f"the suite itself raised {type(e).__name__}: {e}\n{traceback.format_exc(limit=6)}")


def run_suite(options: SuiteOptions, progress: Progress | None = None) -> Report:
    """Run the conformance suite and return its report (see `Report.failed`)."""
    return Suite(options, progress).run()

