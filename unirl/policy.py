"""Policy: binds an algorithm's neutral math (module, loss, optimizer) to one framework adapter.

A policy holds named parameter sets, each a flat float32 vector with the module's layout:
`params` (what the optimizer trains) and whatever else an algorithm declares (a DQN's
`target_params`). The loss is a pure function

    loss(ops, module, params, batch, hp, **other_sets) -> (scalar loss, {name: scalar})

differentiated with respect to `params` only (named arrays; the other sets arrive as named
arrays too, constants), and the optimizer is a chain of pure gradient transformations
(unirl.optim). Weights cross process boundaries as NumPy (a flat float32 vector on the wire,
named arrays in checkpoints); the framework's tensors never leave the policy.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import numpy as np

from unirl.optim import GradientTransformation, global_norm

LossFn = Callable

#: Policy.forward pads its rows to a multiple of this (bounded number of compiled shapes).
FORWARD_ROWS_MULTIPLE = 64

PARAMS = "params"

#: Compiled functions (JAX jit, TF tf.function) shared by the policies of this process built from the
#: same ingredients, newest last; the oldest are dropped past SHARED_COMPILED_MAX.
_SHARED_COMPILED: "OrderedDict[tuple, Callable]" = OrderedDict()
_SHARED_LOCK = threading.Lock()
SHARED_COMPILED_MAX = 128


def clear_compiled() -> None:
    """Forget every shared compiled function: the next policy traces (compiles) its own."""
    with _SHARED_LOCK:
        _SHARED_COMPILED.clear()


def _ingredients_key(adapter, module, loss, optimizer, param_sets) -> tuple | None:
    """What a policy's compiled functions depend on, as a hashable key: the adapter (its class and
    compile options) and the cloudpickle bytes of (module, loss, optimizer, parameter sets). Equal
    bytes mean the same code and the same captured values (the functions' bodies are Policy's own),
    so equal keys trace the same computation. None (no sharing) where the adapter compiles nothing
    or the ingredients do not pickle."""
    if not getattr(adapter, "traces", False):
        return None
    import cloudpickle

    try:
        blob = cloudpickle.dumps((module, loss, optimizer, tuple(param_sets)))
    except Exception:  # an ingredient that does not pickle: this policy compiles its own
        return None
    return (type(adapter).__module__, type(adapter).__qualname__, adapter.compile_options(),
            hashlib.sha256(blob).hexdigest())


def _stats_with_norms(ops, loss, stats, grad):
    stats = dict(stats)
    stats["total_loss"] = loss
    stats["grad_gnorm"] = global_norm(ops, grad)
    return stats


def tree_paths(tree, prefix: str = "") -> list[tuple[str, object]]:
    """(path, leaf) pairs of a pytree of tuples/NamedTuples/dicts, paths like "1/mu"."""
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, tuple) and hasattr(tree, "_fields"):
        items = zip(tree._fields, tree)
    elif isinstance(tree, (tuple, list)):
        items = ((str(i), v) for i, v in enumerate(tree))
    else:
        return [(prefix, tree)]
    out = []
    for k, v in items:
        out.extend(tree_paths(v, f"{prefix}/{k}" if prefix else str(k)))
    return out


def tree_replace(tree, values: dict, prefix: str = ""):
    """`tree` with each leaf replaced by values[path] (same structure)."""
    if isinstance(tree, dict):
        return {k: tree_replace(v, values, f"{prefix}/{k}" if prefix else str(k)) for k, v in tree.items()}
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return type(tree)(*(tree_replace(v, values, f"{prefix}/{k}" if prefix else str(k))
                            for k, v in zip(tree._fields, tree)))
    if isinstance(tree, (tuple, list)):
        return type(tree)(tree_replace(v, values, f"{prefix}/{i}" if prefix else str(i)) for i, v in enumerate(tree))
    return values[prefix]


@dataclass(frozen=True)
class Learner:
    """One (loss, trained parameters, optimizer) triple of a policy with several losses.

    `trains`: name prefixes of the parameters of `params` this loss trains (the rest are constants to
    it; "q1/" trains every "q1/..." array); `optimizer`: its own chain (None: the algorithm's
    default); `lr`: the hyperparameter key of its step size (its optimizer reads it as `lr`). The loss
    has the single-loss signature, loss(ops, module, params, batch, hp, **other_sets)."""

    name: str
    loss: LossFn
    trains: tuple = ()
    optimizer: GradientTransformation | None = None
    lr: str = "lr"


@dataclass(frozen=True)
class Polyak:
    """Polyak averaging of one parameter set towards another, `dst <- (1 - tau) dst + tau src` (a target
    network's soft update), with `tau` the hyperparameter of that name; run after the learners of a step."""

    src: str = PARAMS
    dst: str = "target_params"
    tau: str = "tau"

    def apply(self, ops, sets: dict, hp: dict) -> None:
        tau = hp[self.tau]
        sets[self.dst] = (1.0 - tau) * sets[self.dst] + tau * sets[self.src]


def learner_ranges(layout, trains: tuple) -> list[tuple[int, int]]:
    """The flat ranges [(start, end), ...] of the parameters whose names start with one of `trains`
    (every parameter for ()), consecutive arrays merged."""
    from unirl.errors import UnirlError

    ranges: list[list[int]] = []
    for name in layout.names:
        if trains and not any(name.startswith(t) for t in trains):
            continue
        a, b = layout.slices[name]
        if ranges and ranges[-1][1] == a:
            ranges[-1][1] = b
        else:
            ranges.append([a, b])
    if not ranges:
        raise UnirlError(f"a learner trains {list(trains)}, which names no parameter of this module "
                         f"(its parameters: {', '.join(layout.names[:8])}{', ...' if len(layout.names) > 8 else ''}).")
    return [(a, b) for a, b in ranges]


def _gather(ops, flat, ranges):
    """The ranges of `flat`, one after the other."""
    pieces = [flat[a:b] for a, b in ranges]
    return pieces[0] if len(pieces) == 1 else ops.concat(pieces, axis=0)


def _scatter(ops, flat, ranges, x, size):
    """`flat` with the ranges replaced by consecutive pieces of `x`."""
    pieces, pos, off = [], 0, 0
    for a, b in ranges:
        if a > pos:
            pieces.append(flat[pos:a])
        pieces.append(x[off:off + b - a])
        off += b - a
        pos = b
    if pos < size:
        pieces.append(flat[pos:size])
    return pieces[0] if len(pieces) == 1 else ops.concat(pieces, axis=0)


class Policy:
    """Acting (policy_outputs, compute_actions), learner passes (forward), learning (learn_on_batch,
    compute_gradients, apply_gradients) and state (weights per parameter set, optimizer state)."""

    def __init__(self, adapter, module, init_params: dict[str, np.ndarray], loss: LossFn | None = None,
                 optimizer: GradientTransformation | None = None, param_sets: tuple = (PARAMS,),
                 learners: tuple = ()):
        self.adapter = adapter
        self.ops = adapter.ops
        self.module = module
        self.dist = module.dist
        self.layout = module.layout
        #: Rows are padded to a multiple of this (a module may ask for fewer: a CNN's products
        #: run over image positions, already in 64-row blocks, and 64 padded images cost 64 images).
        self._rows_multiple = int(getattr(module, "forward_rows_multiple", FORWARD_ROWS_MULTIPLE))
        self.loss = loss
        self.optimizer = optimizer
        #: Several (loss, trained part, optimizer) triples (Learner) instead of one loss training all of `params`.
        self.learners = tuple(learners)
        if self.learners and loss is not None:
            raise ValueError("a policy takes one `loss` or several `learners`, not both")
        names = [l.name for l in self.learners]
        if len(set(names)) != len(names):
            raise ValueError(f"learner names must differ, got {names}")
        self.param_sets = tuple(param_sets)
        if PARAMS not in self.param_sets:
            raise ValueError(f"a policy's parameter sets must include `{PARAMS}`, got {self.param_sets}")
        #: Called as recorder(kind, policy, batch, hp) before each learning call ("learn" or
        #: "gradients"): the conformance suite records an algorithm's own batches this way.
        self.recorder = None
        ops, layout = self.ops, self.layout

        def unflatten(flat):
            return layout.unflatten(ops, flat)

        if getattr(adapter, "flat_params_for_acting", False):
            # One parameter input instead of one per named array: a compiled call's overhead grows
            # with its number of inputs (TF), and slicing the flat vector inside is free.
            def policy_out(flat, obs):
                return module.forward_inference(ops, layout.unflatten(ops, flat), obs)

            def forward(flat, obs):
                return module.forward_train(ops, layout.unflatten(ops, flat), obs)
        else:
            def policy_out(params, obs):
                return module.forward_inference(ops, params, obs)

            def forward(params, obs):
                return module.forward_train(ops, params, obs)

        #: Policies of this process built from equal ingredients share their compiled functions (JAX and
        #: TF trace each once per process, not once per policy: a new PPO policy's first iteration on
        #: CartPole with JAX 0.3-0.5 s -> ~0.03 s); unirl.policy.clear_compiled() forgets them.
        self._share_key = _ingredients_key(adapter, module, loss if not self.learners else self.learners, optimizer,
                                           self.param_sets)
        self._unflatten = self._compile("unflatten", unflatten)
        self._policy_out = self._compile("policy_out", policy_out)
        self._forward = self._compile("forward", forward)
        self._acting_params = None
        self._learn_step = None
        self._learn_steps = None
        self._grad_step = None
        self._apply_step = None
        self._multi_steps: dict = {}
        self._calls: dict = {}
        self._ranges = {l.name: learner_ranges(layout, l.trains) for l in self.learners}
        flat = layout.flatten(init_params)
        self.sets = {name: self.adapter.tensor(flat.copy()) for name in self.param_sets}
        #: Each parameter set's version: how many times it was changed (set, learned, updated) since the
        #: policy was built. Workers receive sets with their versions and report the versions they used.
        self.versions = {name: 0 for name in self.param_sets}
        self._refresh_acting_params()
        self.opt_state = None
        if self.learners:
            # one optimizer state per learner, over the parameters it trains: {learner name: state}
            self.opt_state = adapter.tree_tensor({l.name: self._optimizer_of(l).init(
                _numpy_ops(), np.concatenate([flat[a:b] for a, b in self._ranges[l.name]])) for l in self.learners})
        elif optimizer is not None:
            self.opt_state = adapter.tree_tensor(optimizer.init(_numpy_ops(), flat))

    # -- weights -------------------------------------------------------------------------
    @property
    def flat(self):
        """The trained parameter set `params`, as a flat framework tensor."""
        return self.sets[PARAMS]

    def set_flat_weights(self, flat: np.ndarray, name: str = PARAMS) -> None:
        self.sets[name] = self.adapter.tensor(np.asarray(flat, np.float32))
        self._bump(name)
        if name == PARAMS:
            self._refresh_acting_params()

    def _bump(self, name: str) -> None:
        v = self.versions.get(name)
        self.versions[name] = 0 if v is None else v + 1

    def get_parameter_sets(self, names) -> dict[str, np.ndarray]:
        """The named parameter sets as flat NumPy vectors (what a pattern sends to its workers)."""
        return {name: self.get_flat_weights(name) for name in names}

    def set_parameter_sets(self, sets: dict[str, np.ndarray], versions: dict[str, int]) -> None:
        """Take parameter sets sent by the driver, with the driver's versions of them."""
        from unirl.errors import UnirlError

        for name, flat in sets.items():
            if name not in self.sets:
                raise UnirlError(f"a worker was sent parameter set `{name}`, which its policy does not keep "
                                 f"(it keeps {', '.join(self.param_sets)}).")
            self.set_flat_weights(flat, name)
        self.versions.update({name: int(versions[name]) for name in sets})

    def forget_versions(self) -> None:
        """Mark every parameter set as never received (a worker's copy): using one before it is sent is an error."""
        self.versions = {name: None for name in self.param_sets}

    def used_versions(self) -> dict[str, int]:
        """The versions of every parameter set the loss reads; a UnirlError names a set this (worker) copy was never sent."""
        from unirl.errors import UnirlError

        missing = [name for name, v in self.versions.items() if v is None]
        if missing:
            raise UnirlError(f"this worker's loss reads parameter set `{missing[0]}`, which the driver never sent "
                             "it; list it in the execution pattern's worker_sets (by default every set the "
                             "algorithm keeps).")
        return dict(self.versions)

    def get_flat_weights(self, name: str = PARAMS) -> np.ndarray:
        return np.array(self.adapter.numpy(self.sets[name]), dtype=np.float32)

    def get_weights(self, name: str = PARAMS) -> dict[str, np.ndarray]:
        return self.layout.unflatten_numpy(self.get_flat_weights(name))

    def set_weights(self, weights: dict[str, np.ndarray], name: str = PARAMS) -> None:
        self.set_flat_weights(self.layout.flatten(weights), name)

    def copy_params(self, src: str = PARAMS, dst: str = "target_params") -> None:
        """Set parameter set `dst` to a copy of `src` (a target-network sync)."""
        self.set_flat_weights(self.get_flat_weights(src), dst)

    def get_optimizer_state(self) -> dict[str, np.ndarray]:
        if self.opt_state is None:
            return {}
        return {path: np.asarray(v) for path, v in tree_paths(self.adapter.tree_numpy(self.opt_state))}

    def set_optimizer_state(self, arrays: dict[str, np.ndarray]) -> None:
        if self.opt_state is not None and arrays:
            numpy_state = self.adapter.tree_numpy(self.opt_state)
            self.opt_state = self.adapter.tree_tensor(tree_replace(numpy_state, arrays))

    def get_state(self) -> dict[str, np.ndarray]:
        """Every parameter set ("params/pi/0/w", "target_params/...") and the optimizer state ("opt/..."), as NumPy."""
        state = {f"{s}/{k}": v for s in self.param_sets for k, v in self.get_weights(s).items()}
        state.update({f"opt/{k}": v for k, v in self.get_optimizer_state().items()})
        return state

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        for s in self.param_sets:
            weights = {k[len(s) + 1:]: v for k, v in state.items() if k.startswith(s + "/")}
            if weights:
                self.set_weights(weights, s)
        self.set_optimizer_state({k[4:]: v for k, v in state.items() if k.startswith("opt/")})

    # -- acting --------------------------------------------------------------------------
    def policy_outputs(self, obs: np.ndarray) -> np.ndarray:
        """`forward_inference` (e.g. logits, Q-values) for a batch of observations, as NumPy.

        Rows are zero-padded to a multiple of FORWARD_ROWS_MULTIPLE, as in `forward`: the
        adapters' products run in blocks of that many rows anyway (a row's bits never depend on
        its batch), and compiled frameworks then trace one shape per 64 rows, not one per size.
        """
        obs, n = _pad_rows(np.asarray(obs, np.float32), self._rows_multiple)
        return self.adapter.numpy(self._policy_out(self._params, self.adapter.call_input(obs)))[:n]

    def forward(self, obs: np.ndarray) -> dict[str, np.ndarray]:
        """`forward_train` (e.g. {"dist_inputs", "values"}) for a batch of observations, as NumPy.

        The rows are zero-padded to a multiple of FORWARD_ROWS_MULTIPLE: the learner's batch
        size varies with the number of truncated episodes, and compiled frameworks trace once per
        shape. Rows do not depend on the batch they arrive in, so padding changes no number.
        """
        obs, n = _pad_rows(np.asarray(obs, np.float32), self._rows_multiple)
        out = self._forward(self._params, self.adapter.call_input(obs))
        return {k: self.adapter.numpy(v)[:n] for k, v in out.items()}

    def call(self, fn, batch: dict[str, np.ndarray], pad_rows: bool = False):
        """fn(ops, module, params, batch) on the trained parameters, compiled once per function (a worker's own
        computation on the module: Ape-X TD3's actors' TD errors, say); NumPy arrays in and out. `pad_rows`: every
        input's rows are zero-padded to the policy's multiple (as in `forward`) and every output cut back to them,
        so a row's bits do not depend on how many rows share the call."""
        if pad_rows:
            n = len(next(iter(batch.values())))
            padded = {k: _pad_rows(np.asarray(v), self._rows_multiple)[0] for k, v in batch.items()}
            return {k: np.array(v[:n]) for k, v in self.call(fn, padded).items()}
        compiled = self._calls.get(fn)
        if compiled is None:
            ops, layout, module = self.ops, self.layout, self.module

            def run(flat, batch):
                return fn(ops, module, layout.unflatten(ops, flat), batch)

            compiled = self._calls[fn] = self.adapter.compile(run)
        out = compiled(self.flat, {k: self.adapter.call_input(np.asarray(v)) for k, v in batch.items()})
        return self.adapter.tree_numpy(out)

    def act(self, obs: np.ndarray, noise: np.ndarray | None, state: np.ndarray | None = None, **explore):
        """(actions, distribution inputs, next acting state) for a batch of observations, one row per env: what a
        rollout worker calls each step. `noise` is each env's [N, dist.noise_per_step] uniforms (None: greedy),
        `state` each env's acting state (None for a module without one; see `acting_state_shape`).

        By default, the forward pass and a draw from the distribution. A module that acts another way defines
        `act(policy, obs, noise, state, **explore)` (PETS plans against its dynamics model) and, if it carries
        something from step to step (a plan to warm-start from, a recurrent state), `acting_state_shape`: the
        worker keeps one such array per env, zeros at each episode start, and saves it with the env."""
        module_act = getattr(self.module, "act", None)
        if module_act is not None:
            return module_act(self, obs, noise, state, **explore)
        out = self.policy_outputs(obs)
        if noise is None:
            return self.dist.greedy_numpy(out), out, state
        return self.dist.sample_numpy(out, noise, **explore), out, state

    def compute_actions(self, obs: np.ndarray, noise: np.ndarray | None = None, **explore) -> np.ndarray:
        """Actions for a batch of observations: drawn with `noise` ([N, dist.noise_per_step]
        uniforms) and the exploration settings (e.g. epsilon), or greedy if noise is None."""
        self.dist.check_exploration(explore, required=False)
        if getattr(self.module, "act", None) is not None:  # a planner's actions, in the env's units
            return self.dist.env_actions(self.act(obs, noise, None, **explore)[0])
        out = self.policy_outputs(obs)
        if noise is None:
            return self.dist.greedy_numpy(out)
        return self.dist.sample_numpy(out, noise, **explore)

    # -- learning ------------------------------------------------------------------------
    def _loss_and_grad(self):
        """vg(flat, others, batch, hp) -> ((loss, stats), d loss / d flat)."""
        ops, layout, module, loss = self.ops, self.layout, self.module, self.loss

        def loss_of_flat(flat, others, batch, hp):
            frozen = {name: layout.unflatten(ops, v) for name, v in others.items()}
            return loss(ops, module, layout.unflatten(ops, flat), batch, hp, **frozen)

        return self.adapter.value_and_grad(loss_of_flat)

    def _others(self) -> dict:
        return {name: v for name, v in self.sets.items() if name != PARAMS}

    def _compile(self, name: str, fn):
        """adapter.compile(fn), or the function a policy with the same ingredients compiled as `name`."""
        if self._share_key is None:
            return self.adapter.compile(fn)
        key = (name,) + self._share_key
        with _SHARED_LOCK:
            compiled = _SHARED_COMPILED.get(key)
            if compiled is None:
                compiled = _SHARED_COMPILED[key] = self.adapter.compile(fn)
                while len(_SHARED_COMPILED) > SHARED_COMPILED_MAX:
                    _SHARED_COMPILED.popitem(last=False)
            else:
                _SHARED_COMPILED.move_to_end(key)
        return compiled

    def _learn_step_fn(self):
        vg, opt, ops = self._loss_and_grad(), self.optimizer, self.ops

        def learn_step(flat, others, opt_state, batch, hp):
            (loss, stats), grad = vg(flat, others, batch, hp)
            updates, opt_state = opt.update(ops, grad, opt_state, flat, hp)
            return flat + updates, opt_state, _stats_with_norms(ops, loss, stats, grad)

        return learn_step

    def _build_learn_step(self):
        return self._compile("learn_step", self._learn_step_fn())

    def _build_learn_steps(self):
        """learn_step over a stack of minibatches [k, rows, ...] in one compiled call (adapters with
        compiled_loops); returns the last step's stats, as the Python loop does."""
        step, scan = self._learn_step_fn(), self.adapter.scan

        def learn_steps(flat, others, opt_state, batches, hp):
            def body(carry, batch):
                flat, opt_state, stats = step(carry[0], others, carry[1], batch, hp)
                return (flat, opt_state), stats

            (flat, opt_state), stats = scan(body, (flat, opt_state), batches)
            return flat, opt_state, {k: v[-1] for k, v in stats.items()}

        return self._compile("learn_steps", learn_steps)

    def learn_epochs(self, rows: dict[str, np.ndarray], hp, num_epochs: int, minibatch_size: int,
                     rng: np.random.Generator) -> dict:
        """Minibatch SGD over a batch: `num_epochs` passes, each in a fresh permutation drawn from
        `rng` and cut into minibatches of `minibatch_size` rows (the last may be shorter), one
        learn_on_batch each. Returns the last step's stats (tensors, see stats_numpy).

        The rows are permuted and cut in NumPy and go in as call_input: slicing a device array eagerly
        costs JAX about 100 us per key and TF about 20 (a PPO iteration's learner on CartPole: JAX
        12.4 -> 4.4 ms, TF 24.9 -> 13.2 ms, torch the same); the gather is exact, so the bits are
        those of slicing on the device. Where the adapter compiles loops (JAX) and the minibatches
        are all full, every epoch's minibatches go in stacked, as one compiled call (lax.scan over
        the learn step: ~1.5 ms less per PPO CartPole iteration than 20 calls, the same bits);
        a recorder (conformance's capture of one learning call) sees each step as a call."""
        _, hp = self._as_tensors({}, hp)  # floats become tensors once, not at every step
        if self.learners:
            raise ValueError("learn_epochs is for single-loss policies; call learn_on_batch per minibatch")
        rows, unflat = _sequences_as_units(rows)
        if unflat is not None:  # a recurrent module's sequences: minibatches of whole sequences, as many rows
            minibatch_size = max(1, minibatch_size // unflat)
        n = len(next(iter(rows.values())))
        perms = [rng.permutation(n) for _ in range(num_epochs)]
        if self.adapter.compiled_loops and n % minibatch_size == 0 and self.recorder is None and perms:
            idx, k = np.concatenate(perms), num_epochs * (n // minibatch_size)
            batches = {key: self.adapter.call_input(_unit_rows(key, v[idx].reshape((k, minibatch_size) + v.shape[1:]),
                                                               unflat, 2))
                       for key, v in rows.items()}
            if self._learn_steps is None:
                self._learn_steps = self._build_learn_steps()
            self.sets[PARAMS], self.opt_state, stats = self._learn_steps(self.flat, self._others(), self.opt_state,
                                                                         batches, hp)
            self._acting_params = None
            self._bump(PARAMS)
        else:
            stats = None
            for perm in perms:
                shuffled = {k: v[perm] for k, v in rows.items()}
                for start in range(0, n, minibatch_size):
                    stats = self.learn_on_batch({k: _unit_rows(k, v[start:start + minibatch_size], unflat, 1)
                                                 for k, v in shuffled.items()}, hp)
        self.finish_learning()
        return stats

    def hp_tensors(self, hp: dict[str, float]):
        """Hyperparameters as scalar inputs of the compiled steps (inputs, not constants, so a schedule
        never forces a recompile), in the form a compiled function takes fastest (call_input)."""
        return {k: self.adapter.call_input(np.asarray(v, np.float32)) for k, v in hp.items()}

    def _as_tensors(self, batch, hp):
        # A NumPy minibatch goes in as call_input: one step uses it once, so JAX's jit converts it on its
        # C++ path rather than through a device_put per key.
        if batch and isinstance(next(iter(batch.values())), np.ndarray):
            batch = {k: self.adapter.call_input(v) for k, v in batch.items()}
        if hp and isinstance(next(iter(hp.values())), (float, int, np.floating)):
            hp = self.hp_tensors(hp)
        return batch, hp

    def _optimizer_of(self, learner: Learner) -> GradientTransformation:
        opt = learner.optimizer or self.optimizer
        if opt is None:
            raise ValueError(f"learner `{learner.name}` has no optimizer and the policy no default one")
        return opt

    def _active(self, learners) -> tuple:
        """The learners named (all for None), in declared order; an unknown name is a UnirlError."""
        if learners is None:
            return self.learners
        from unirl.errors import UnirlError

        known = {l.name for l in self.learners}
        for name in learners:
            if name not in known:
                raise UnirlError(f"this policy has no learner `{name}` (it has {', '.join(sorted(known)) or 'none'}).")
        return tuple(l for l in self.learners if l.name in learners)

    def _learner_grad_fn(self, learner: Learner):
        """g(flat, others, batch, hp) -> ((loss, stats), gradient over the parameters `learner` trains): the
        rest of `params` and the other sets are constants."""
        from unirl.models import ParamLayout

        ops, layout, module = self.ops, self.layout, self.module
        ranges = self._ranges[learner.name]
        # the trained arrays are views of x (in layout order, as _gather lays them out), the others of the constant
        # flat vector: the backward pass then computes no gradient for an array the learner does not train
        trained = ParamLayout({n: layout.shapes[n] for n in layout.names
                               if any(a <= layout.slices[n][0] < b for a, b in ranges)})

        def loss_of_part(x, flat, others, batch, hp):
            frozen = {name: layout.unflatten(ops, v) for name, v in others.items()}
            params = layout.unflatten(ops, flat)
            params.update(trained.unflatten(ops, x))
            return learner.loss(ops, module, params, batch, hp, **frozen)

        vg = self.adapter.value_and_grad(loss_of_part)

        def grad(flat, others, batch, hp):
            return vg(_gather(ops, flat, ranges), flat, others, batch, hp)

        return grad

    def _multi_step(self, active: tuple, then: tuple, stacked: bool = False):
        """The compiled step running the `active` learners in order (each on the parameters as the previous
        left them), then the `then` updates (Polyak); one per (learners, updates) combination. `stacked`: the
        step scanned over a stack of minibatches in one compiled call (adapters with compiled_loops)."""
        key = (tuple(l.name for l in active), tuple(then), stacked)
        step = self._multi_steps.get(key)
        if step is None:
            fn = self._multi_step_fn(active, then)
            if stacked:
                fn = self._scanned(fn)
            name = ("learn_steps:" if stacked else "learn_step:") + ",".join(key[0]) + repr(key[1])
            step = self._multi_steps[key] = self._compile(name, fn)
        return step

    def _scanned(self, multi_step):
        scan = self.adapter.scan

        def multi_steps(flat, others, opt_state, batches, hp):
            def body(carry, batch):
                sets, opt_state, stats = multi_step(carry[0], carry[1], carry[2], batch, hp)
                flat = sets.pop(PARAMS)
                return (flat, sets, opt_state), stats

            (flat, others, opt_state), stats = scan(body, (flat, others, opt_state), batches)
            return dict(others, **{PARAMS: flat}), opt_state, {k: v[-1] for k, v in stats.items()}

        return multi_steps

    def _multi_step_fn(self, active: tuple, then: tuple):
        ops, size = self.ops, self.layout.size
        parts = [(l, self._learner_grad_fn(l), self._optimizer_of(l), self._ranges[l.name]) for l in active]

        def multi_step(flat, others, opt_state, batch, hp):
            opt_state, stats, total = dict(opt_state), {}, 0.0
            for learner, grad_fn, opt, ranges in parts:
                (loss, learner_stats), grad = grad_fn(flat, others, batch, hp)
                lhp = hp if learner.lr == "lr" else dict(hp, lr=hp[learner.lr])
                x = _gather(ops, flat, ranges)
                updates, opt_state[learner.name] = opt.update(ops, grad, opt_state[learner.name], x, lhp)
                flat = _scatter(ops, flat, ranges, x + updates, size)
                stats.update(learner_stats)
                stats[f"{learner.name}_loss"] = loss
                stats[f"{learner.name}_grad_gnorm"] = global_norm(ops, grad)
                total = total + loss
            stats["total_loss"] = total
            sets = dict(others, **{PARAMS: flat})
            for update in then:
                update.apply(ops, sets, hp)
            return sets, opt_state, stats

        return multi_step

    def learn_on_batches(self, batches: dict, hp, learners: tuple | None = None, then: tuple = ()) -> dict:
        """`learn_on_batch` once per minibatch of `batches` (each column stacked [k, rows, ...]), with the same
        learners and updates; where the adapter compiles loops (JAX) and no recorder watches the calls, all k
        steps in one compiled call (a scan over the step). Returns the last step's stats."""
        k = len(next(iter(batches.values())))
        if not (self.learners and self.adapter.compiled_loops and self.recorder is None):
            stats = None
            for i in range(k):
                stats = self.learn_on_batch({c: v[i] for c, v in batches.items()}, hp, learners, then)
            return stats
        batches = {c: self.adapter.call_input(np.ascontiguousarray(v)) for c, v in batches.items()}
        _, hp = self._as_tensors({}, hp)
        step = self._multi_step(self._active(learners), tuple(then), stacked=True)
        sets, self.opt_state, stats = step(self.flat, self._others(), self.opt_state, batches, hp)
        for name in [PARAMS] + [u.dst for u in then]:
            self.sets[name] = sets[name]
            self.versions[name] = (self.versions.get(name) or 0) + k
        self._acting_params = None
        return stats

    def learn_on_batch(self, batch, hp, learners: tuple | None = None, then: tuple = ()) -> dict:
        """One gradient step (loss, then the optimizer chain) on a minibatch; `batch` and `hp`
        are NumPy/floats or tensors. Returns the stats as tensors (see stats_numpy).

        A policy with several learners runs those named in `learners` (None: all), in their declared order,
        then the `then` updates of other parameter sets (e.g. Polyak(tau="tau")), in one compiled step."""
        if self.recorder is not None:
            self.recorder("learn", self, batch, hp, {"learners": learners, "then": then})
        if self.learners:
            batch, hp = self._as_tensors(batch, hp)
            step = self._multi_step(self._active(learners), tuple(then))
            sets, self.opt_state, stats = step(self.flat, self._others(), self.opt_state, batch, hp)
            for name in [PARAMS] + [u.dst for u in then]:
                self.sets[name] = sets[name]
                self._bump(name)
            self._acting_params = None
            return stats
        if learners is not None or then:
            raise ValueError("`learners` and `then` are for policies with several learners")
        if self._learn_step is None:
            self._learn_step = self._build_learn_step()
        batch, hp = self._as_tensors(batch, hp)
        self.sets[PARAMS], self.opt_state, stats = self._learn_step(self.flat, self._others(), self.opt_state, batch, hp)
        self._acting_params = None
        self._bump(PARAMS)
        return stats

    def finish_learning(self) -> None:
        """Refresh the acting parameters after a run of learn_on_batch calls (none since the last
        refresh: nothing to do, the acting parameters are those of the unchanged weights)."""
        if self._acting_params is None:
            self._refresh_acting_params()

    def _refresh_acting_params(self) -> None:
        if getattr(self.adapter, "flat_params_for_acting", False):
            self._acting_params = self.flat
        else:
            self._acting_params = self._unflatten(self.flat)

    @property
    def _params(self):
        """The parameters acting functions take: the flat vector, or named views of it."""
        if self._acting_params is None:
            self._refresh_acting_params()
        return self._acting_params

    def compute_gradients(self, batch, hp) -> tuple[np.ndarray, dict[str, float]]:
        """(flat gradient of the loss, stats) without changing anything; the optimizer chain
        (clipping included) runs in apply_gradients."""
        if self.recorder is not None:
            self.recorder("gradients", self, batch, hp, {})
        if self._grad_step is None and self.learners:
            ops, size = self.ops, self.layout.size
            parts = [(l, self._learner_grad_fn(l), self._ranges[l.name]) for l in self.learners]

            def multi_grad_step(flat, others, batch, hp):
                # each learner's gradient over its own parameters at the same point, side by side in one vector
                grad, stats, total = ops.zeros_like(flat), {}, 0.0
                for learner, grad_fn, ranges in parts:
                    (loss, learner_stats), g = grad_fn(flat, others, batch, hp)
                    grad = _scatter(ops, grad, ranges, g, size)
                    stats.update(learner_stats)
                    stats[f"{learner.name}_loss"] = loss
                    total = total + loss
                return grad, _stats_with_norms(ops, total, stats, grad)

            self._grad_step = self._compile("grad_step", multi_grad_step)
        if self._grad_step is None:
            vg, ops = self._loss_and_grad(), self.ops

            def grad_step(flat, others, batch, hp):
                (loss, stats), grad = vg(flat, others, batch, hp)
                return grad, _stats_with_norms(ops, loss, stats, grad)

            self._grad_step = self._compile("grad_step", grad_step)
        batch, hp = self._as_tensors(batch, hp)
        grad, stats = self._grad_step(self.flat, self._others(), batch, hp)
        return np.array(self.adapter.numpy(grad), np.float32), self.stats_numpy(stats)

    def apply_gradients(self, grad: np.ndarray, hp) -> None:
        """Run the optimizer chain on a flat gradient (from compute_gradients, maybe another process's)."""
        if self.learners:
            raise ValueError("a policy with several learners learns with learn_on_batch (each learner's "
                             "optimizer runs on its own loss's gradient)")
        if self._apply_step is None:
            opt, ops = self.optimizer, self.ops

            def apply_step(flat, opt_state, grad, hp):
                updates, opt_state = opt.update(ops, grad, opt_state, flat, hp)
                return flat + updates, opt_state

            self._apply_step = self._compile("apply_step", apply_step)
        _, hp = self._as_tensors({}, hp)
        self.sets[PARAMS], self.opt_state = self._apply_step(
            self.flat, self.opt_state, self.adapter.tensor(np.asarray(grad, np.float32)), hp)
        self._bump(PARAMS)
        self._refresh_acting_params()

    def stats_numpy(self, stats) -> dict[str, float]:
        """Scalar stats as floats; a per-row stat (e.g. TD errors for replay priorities) as a NumPy array."""
        out = {}
        for k, v in stats.items():
            v = np.asarray(self.adapter.numpy(v))
            out[k] = float(v) if v.ndim == 0 else v
        return out


def _sequences_as_units(rows: dict) -> tuple[dict, int | None]:
    """(rows, None) for rows; for a recurrent module's sequences (column STATE_IN [S, ...] beside rows [S * L, ...]),
    every row column grouped [S, L, ...] so minibatches cut whole sequences, and L."""
    from unirl import sample_batch as sb

    if sb.STATE_IN not in rows:
        return rows, None
    s = len(rows[sb.STATE_IN])
    length = len(rows[sb.OBS]) // s
    return {k: v if k == sb.STATE_IN else v.reshape((s, length) + v.shape[1:]) for k, v in rows.items()}, length


def _unit_rows(key: str, v: np.ndarray, length: int | None, axis: int) -> np.ndarray:
    """Grouped sequence columns back to rows: the `axis` leading axes kept, the sequence and step axes merged."""
    from unirl import sample_batch as sb

    if length is None or key == sb.STATE_IN:
        return v
    return v.reshape(v.shape[:axis - 1] + (-1,) + v.shape[axis + 1:])


def _pad_rows(obs: np.ndarray, multiple: int = FORWARD_ROWS_MULTIPLE) -> tuple[np.ndarray, int]:
    """(obs zero-padded to a multiple of `multiple` rows, the original row count)."""
    n = len(obs)
    padded = -(-n // multiple) * multiple
    if padded != n:
        obs = np.concatenate([obs, np.zeros((padded - n,) + obs.shape[1:], obs.dtype)])
    return obs, n


def _numpy_ops():
    from unirl.ops import numpy_ops

    return numpy_ops


@dataclass
class PolicySpec:
    """Everything needed to build an acting policy in another process (plain data; pickles).

    Workers receive this, not an algorithm name to look up: the module (with its
    distribution) travels as an object, the framework as a name or import path.
    """

    framework: str
    module: object
    seed: int = 0
    deterministic: bool = True
    num_threads: int = 1

    def adapter(self):
        from unirl.frameworks import get_adapter

        return get_adapter(self.framework, deterministic=self.deterministic, num_threads=self.num_threads)

    def build(self, loss: LossFn | None = None, optimizer: GradientTransformation | None = None,
              param_sets: tuple = (PARAMS,), learners: tuple = ()) -> Policy:
        return Policy(self.adapter(), self.module, self.module.init_params(self.seed), loss=loss,
                      optimizer=optimizer, param_sets=param_sets, learners=learners)

    def preload_modules(self) -> list[str]:
        """Modules a process backend may import before building workers (the framework adapter)."""
        from unirl.frameworks import FRAMEWORKS

        if self.framework in FRAMEWORKS:
            return [FRAMEWORKS[self.framework][0]]
        return [self.framework.partition(":")[0]] if ":" in self.framework else []
