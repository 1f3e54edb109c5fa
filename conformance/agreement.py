"""Levels 4 and 5: frameworks agree (loss and gradients within a tolerance, equivalent learning curves),
and each algorithm reaches its reference score within its step budget."""
from __future__ import annotations

import time
import traceback

import numpy as np

from unirl.conformance.report import FAILED, PASSED, UNAVAILABLE
from unirl.conformance.runs import RunSpec, record_run


def _record(level, check, algo, framework, status, duration_s, message="", difference=None) -> dict:
    return dict(level=level, check=check, algo=algo, framework=framework, backend=None, status=status,
                duration_s=duration_s, message=message, difference=difference)


def gradient_agreement(algo: str, reference: str, framework: str, rtol: float, problem=None) -> dict:
    """The algorithm's own loss on its own batch: from the same captured state (every parameter set and the
    optimizer state) and minibatch, loss, stats, gradient and the learner state after one step within `rtol`.

    `problem` is a framework_checks.LossProblem (captured once per algorithm with the reference
    framework; see `capture_problem`), or an exception raised while capturing it. `rtol` is
    relative to each array's largest magnitude (a gradient's small components carry float32
    rounding of the large ones).
    """
    from unirl.conformance import framework_checks as fc

    check = "loss_and_gradients"
    t0 = time.perf_counter()
    try:
        if isinstance(problem, BaseException):
            raise problem
        problem = problem or fc.capture_problem(algo, framework=reference)
        arrays = fc.compare_loss_and_grads(reference, framework, problem, rtol=rtol)
    except Exception as e:
        tb = "".join(traceback.format_exception(type(e), e, e.__traceback__, limit=8))
        return _record(4, check, algo, framework, FAILED, time.perf_counter() - t0,
                       f"raised {type(e).__name__}: {e}", {"traceback": tb})
    dt = time.perf_counter() - t0
    summary = {k: {"ok": v["ok"], "scale_rel_diff": v["scale_rel_diff"], "max_abs_diff": v["max_abs_diff"],
                   "tolerance_rel_diff": v["details"].get("tolerance_rel_diff")} for k, v in arrays.items()}
    bad = [(k, v) for k, v in arrays.items() if not v["ok"]]
    worst = max(v["details"].get("tolerance_rel_diff", v["scale_rel_diff"]) for v in arrays.values())
    where = {"tolerance": rtol, "reference": reference, "problem": problem.describe(), "arrays": summary}
    if not bad:
        return _record(4, check, algo, framework, PASSED, dt,
                       f"{framework} within {rtol:g} (scale-relative) of {reference} on {len(arrays)} arrays of "
                       f"{algo}'s learning call {problem.call_index}; largest difference {worst:.2e} (relative to each "
                       f"array's scale, or to max(1, |value|) for a scalar)", where)
    name, v = bad[0]
    message = (f"`{name}` of {framework} differs from {reference} beyond the tolerance {rtol:g} "
               f"(scale-relative {v['scale_rel_diff']:.3g}): first at index {list(v['first_index'] or [])}: "
               f"expected {v['expected']!r}, got {v['actual']!r} ({v['message']})")
    if len(bad) > 1:
        message += "; also outside the tolerance: " + ", ".join(k for k, _ in bad[1:])
    return _record(4, check, algo, framework, FAILED, dt, message,
                   dict(where, array=name, index=v["first_index"], expected=v["expected"], actual=v["actual"]))


def curve_score(record) -> float:
    """A run's learning-curve score: the mean return of every episode completed during training."""
    returns = [x for r in record.results for x in r["episode_returns_this_iter"]]
    return float(np.mean(returns)) if returns else float("nan")


def learning_curve_agreement(algo: str, reference: str, frameworks: list, mode, config: dict, progress) -> list:
    """Short runs per framework and seed on the local backend; a paired TOST per framework against the reference.

    Equivalent when the 90% confidence interval of the per-seed score difference (other -
    reference) lies within +-(mode.curve_margin x the reference's mean score), alpha = 0.05.
    """
    from unirl.conformance.stats import paired_tost

    check = "learning_curves"
    scores, spent, errors = {}, {}, {}
    for f in [reference] + list(frameworks):
        scores[f], spent[f] = [], 0.0
        for seed in mode.curve_seeds:
            progress.step(f"{algo}/{f}: learning curve, seed {seed}")
            rec = record_run(RunSpec.make(algo, f, "local", 1, mode.curve_iterations, dict(config, seed=seed)))
            progress.advance()
            spent[f] += rec.duration_s
            if rec.error:
                errors[f] = f"the seed-{seed} run failed: {rec.error}"
                break
            scores[f].append(curve_score(rec))
    out = []
    ref_scores = scores[reference]
    for f in frameworks:
        dt = spent[f] + spent[reference]
        if reference in errors or f in errors:
            out.append(_record(4, check, algo, f, FAILED, dt, errors.get(f) or f"{reference}: {errors[reference]}"))
            continue
        margin = mode.curve_margin * abs(float(np.mean(ref_scores)))
        try:
            t = paired_tost(ref_scores, scores[f], margin, mode.curve_alpha)
        except ImportError:
            out.append(_record(4, check, algo, f, UNAVAILABLE, dt, "the equivalence test needs scipy"))
            continue
        diff = {"test": "paired TOST", "score": "mean training episode return per seed",
                "seeds": list(mode.curve_seeds), "iterations": mode.curve_iterations,
                "reference": reference, "reference_scores": ref_scores, "scores": scores[f], **t.as_dict()}
        out.append(_record(4, check, algo, f, PASSED if t.equivalent else FAILED, dt,
                           f"{f} vs {reference}: {t.describe()}", diff))
    return out


def reaches_reference_score(algo: str, framework: str, target: dict, seed: int = 0) -> dict:
    """Train on the local backend; once the smoothed training return reaches the score, evaluate greedily
    (and every target["eval_every"] env steps too, where the target gives it: an algorithm whose training
    return cannot reach the score, e.g. Async DQN's workers exploring with epsilons up to 0.5).

    Passes when a greedy evaluation (target["eval_episodes"] episodes) averages at least
    target["score"] within target["budget"] env steps.
    """
    import unirl

    t0 = time.perf_counter()
    score, budget = target["score"], target["budget"]
    best = (None, -np.inf)
    algo_obj = None
    try:
        algo_obj = unirl.build(algo, dict(target["config"], framework=framework, backend="local", seed=seed))
        every = target.get("eval_every")
        next_eval = every
        while algo_obj.timesteps_total < budget:
            result = algo_obj.train()
            due = every is not None and algo_obj.timesteps_total >= next_eval
            if due:
                next_eval += every
            if result["episode_return_mean"] >= score or due:
                ev = algo_obj.evaluate(target["eval_episodes"])["evaluation/episode_return_mean"]
                if ev > best[1]:
                    best = (algo_obj.timesteps_total, ev)
                if ev >= score:
                    break
    except Exception as e:
        return _record(5, "learning", algo, framework, FAILED, time.perf_counter() - t0,
                       f"raised {type(e).__name__}: {e}", {"traceback": traceback.format_exc(limit=8)})
    finally:
        if algo_obj is not None:
            algo_obj.stop()
    steps, ev = best
    diff = {"env": target["config"].get("env"), "score": score, "budget": budget, "seed": seed,
            "steps": steps, "greedy_eval_mean": None if steps is None else ev}
    dt = time.perf_counter() - t0
    if steps is not None and ev >= score:
        return _record(5, "learning", algo, framework, PASSED, dt,
                       f"greedy mean {ev:.1f} >= {score:g} after {steps:,} steps (budget {budget:,})", diff)
    got = "the smoothed training return never reached it" if steps is None else \
        f"best greedy mean {ev:.1f} (after {steps:,} steps)"
    return _record(5, "learning", algo, framework, FAILED, dt,
                   f"did not reach {score:g} within {budget:,} steps: {got}", diff)


class _RecordingPolicy:
    """A policy stand-in for evaluate_policy that keeps every observation it is asked to act on (and, for a module
    with an acting state, each row's state)."""

    def __init__(self, policy):
        self.policy, self.observations, self.states = policy, [], []

    def compute_actions(self, obs):
        self.observations.append(np.array(obs, np.float32))
        return self.policy.compute_actions(obs)

    def forward(self, obs):
        self.observations.append(np.array(obs, np.float32))
        return self.policy.forward(obs)

    def act(self, obs, noise, state, **explore):
        self.observations.append(np.array(obs, np.float32))
        self.states.append(np.array(state, np.float32))
        return self.policy.act(obs, noise, state, **explore)

    def __getattr__(self, name):  # the distribution, the module, ...: the policy's
        return getattr(self.policy, name)


def _evaluation_observations(algo_obj, episodes: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The observations the (primary) policy acts on in `episodes` greedy evaluation episodes, and the acting state of
    each (None for a module without one)."""
    from unirl.config import AlgorithmConfig
    from unirl.evaluation import evaluate_policy

    c = algo_obj.config
    from unirl.multi_agent.algorithm import MultiAgentAlgorithm

    # A multi-agent run (its primary policy) or envs of the algorithm's own kind (games): its own evaluation, the
    # policy recorded in place.
    holder = (algo_obj.learners[algo_obj.primary_policy_id] if isinstance(algo_obj, MultiAgentAlgorithm)
              else algo_obj if type(c).check_env is not AlgorithmConfig.check_env else None)
    if holder is not None:
        rec = _RecordingPolicy(holder.policy)
        holder.policy = rec
        try:
            algo_obj.evaluate(episodes)
        finally:
            holder.policy = rec.policy
    else:
        rec = _RecordingPolicy(algo_obj.policy)
        evaluate_policy(rec, c.env, c.env_config, episodes, c.seed)
    return np.concatenate(rec.observations), np.concatenate(rec.states) if rec.states else None


def greedy_outputs(policy, obs: np.ndarray, states: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(greedy actions, the outputs they come from) of a policy on observations, each from its acting state if the
    module keeps one."""
    if states is None:
        return np.asarray(policy.compute_actions(obs)), policy.policy_outputs(obs)
    actions, outputs, _ = policy.act(obs, None, states)
    return np.asarray(policy.dist.env_actions(actions)), outputs


def greedy_action_mismatches(policy, obs: np.ndarray, actions: np.ndarray, ref_actions: np.ndarray,
                             rtol: float, outputs: np.ndarray | None = None) -> np.ndarray:
    """Rows whose greedy action differs from the reference's beyond what framework rounding explains: for discrete
    actions, a different action where the reference's best two outputs are more than rtol x max(1, |output|) apart
    (a near-tie may flip either way); for continuous ones, |difference| above rtol x max(1, |action|)."""
    if np.issubdtype(ref_actions.dtype, np.integer):
        out = np.asarray(policy.policy_outputs(obs) if outputs is None else outputs, np.float64).reshape(len(obs), -1)
        top2 = np.sort(out, axis=-1)[:, -2:] if out.shape[1] > 1 else np.concatenate([out, out - np.inf], -1)
        margin = top2[:, 1] - top2[:, 0]
        differ = (actions != ref_actions).reshape(len(obs), -1).any(axis=-1)
        return np.flatnonzero(differ & (margin > rtol * np.maximum(1.0, np.abs(top2[:, 1]))))
    diff = np.abs(actions.astype(np.float64) - ref_actions).reshape(len(obs), -1)
    bound = rtol * np.maximum(1.0, np.abs(ref_actions.astype(np.float64))).reshape(len(obs), -1)
    return np.flatnonzero((diff > bound).any(axis=-1))


def checkpoint_agreement(algo: str, reference: str, frameworks: list, rtol: float, config: dict,
                         iterations: int = 2, episodes: int = 2) -> list:
    """One evaluation path, and checkpoints that carry across frameworks: train `algo` (its small config, local
    backend) on the reference framework, evaluate greedily, save. Restored into the same framework, the evaluation
    must give the same returns, episode by episode; restored into each other framework, the greedy actions on the
    observations of those episodes must agree with the reference's (greedy_action_mismatches)."""
    import tempfile

    import unirl
    from unirl.conformance.framework_checks import algorithm_class, framework_spec

    t0 = time.perf_counter()
    check = "checkpoint actions"
    cls = algorithm_class(algo)
    out = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            ref_algo = cls(dict(config, framework=framework_spec(reference), backend="local"))
            try:
                for _ in range(iterations):
                    ref_algo.train()
                want = ref_algo.evaluate(episodes)["evaluation/episode_returns"]
                path = ref_algo.save(f"{tmp}/ck")
                obs, states = _evaluation_observations(ref_algo, episodes)
                ref_actions, _ = greedy_outputs(ref_algo.policy, obs, states)
            finally:
                ref_algo.stop()
            with unirl.restore(path, trust_checkpoint=True) as again:
                got = again.evaluate(episodes)["evaluation/episode_returns"]
            status = PASSED if got == want else FAILED
            out.append(_record(4, check, algo, reference, status, time.perf_counter() - t0,
                               f"restored into {reference}: evaluation returns {got} "
                               + ("equal the trained algorithm's" if status == PASSED else f"differ from {want}"),
                               {"want": want, "got": got}))
            for f in frameworks:
                t1 = time.perf_counter()
                with unirl.restore(path, trust_checkpoint=True, framework=framework_spec(f)) as other:
                    actions, outputs = greedy_outputs(other.policy, obs, states)
                    bad = greedy_action_mismatches(other.policy, obs, actions, ref_actions, rtol, outputs)
                diff = {"observations": len(obs), "mismatches": bad[:10].tolist(), "tolerance": rtol}
                if len(bad):
                    i = int(bad[0])
                    out.append(_record(4, check, algo, f, FAILED, time.perf_counter() - t1,
                                       f"the checkpoint restored into {f} acts differently from {reference} on "
                                       f"{len(bad)} of {len(obs)} observations of its evaluation episodes; first at "
                                       f"row {i}: {reference} {ref_actions[i].tolist()}, {f} {actions[i].tolist()}",
                                       diff))
                else:
                    out.append(_record(4, check, algo, f, PASSED, time.perf_counter() - t1,
                                       f"the checkpoint restored into {f} takes {reference}'s greedy actions on all "
                                       f"{len(obs)} observations of its evaluation episodes", diff))
    except Exception as e:
        tb = "".join(traceback.format_exception(type(e), e, e.__traceback__, limit=8))
        out.append(_record(4, check, algo, None, FAILED, time.perf_counter() - t0, f"raised {type(e).__name__}: {e}",
                           {"traceback": tb}))
    return out
