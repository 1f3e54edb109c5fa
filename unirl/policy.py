"""Policy: binds an algorithm's neutral math (model, action distribution, loss) to one framework adapter.

Weights cross process boundaries as NumPy (a flat float32 vector on the wire, named arrays in
checkpoints); the framework's tensors never leave the policy.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from unirl.optim import AdamState, adam_init, adam_update, clip_by_global_norm

# loss(ops, model, dist, params, batch, hp) -> (scalar loss, {name: scalar})
LossFn = Callable

#: Policy.forward pads its rows to a multiple of this (bounded number of compiled shapes).
FORWARD_ROWS_MULTIPLE = 64


class Policy:
    """compute_actions / learn_on_batch / compute_gradients / apply_gradients / get_weights / set_weights."""

    def __init__(self, adapter, model, dist, init_params: dict[str, np.ndarray], loss: LossFn | None = None,
                 grad_clip: float = 0.0):
        self.adapter = adapter
        self.ops = adapter.ops
        self.model = model
        self.dist = dist
        self.layout = model.layout
        self.loss = loss
        self.grad_clip = float(grad_clip)
        ops, layout = self.ops, self.layout

        def unflatten(flat):
            return layout.unflatten(ops, flat)

        if getattr(adapter, "flat_params_for_acting", False):
            # One parameter input instead of one per named array: a compiled call's overhead grows
            # with its number of inputs (TF), and slicing the flat vector inside is free.
            def policy_out(flat, obs):
                return model.policy_out(ops, layout.unflatten(ops, flat), obs)

            def forward(flat, obs):
                return model.forward(ops, layout.unflatten(ops, flat), obs)
        else:
            def policy_out(params, obs):
                return model.policy_out(ops, params, obs)

            def forward(params, obs):
                return model.forward(ops, params, obs)

        self._unflatten = adapter.compile(unflatten)
        self._policy_out = adapter.compile(policy_out)
        self._forward = adapter.compile(forward)
        self._acting_params = None
        self._learn_step = None
        self._grad_step = None
        self._apply_step = None
        self.set_flat_weights(layout.flatten(init_params))
        self.opt_state = adapter.tree_tensor(AdamState(np.float32(0.0), np.zeros(layout.size, np.float32),
                                                       np.zeros(layout.size, np.float32)))

    # -- weights -------------------------------------------------------------------------
    def set_flat_weights(self, flat: np.ndarray) -> None:
        self.flat = self.adapter.tensor(np.asarray(flat, np.float32))
        self._refresh_acting_params()

    def get_flat_weights(self) -> np.ndarray:
        return np.array(self.adapter.numpy(self.flat), dtype=np.float32)

    def get_weights(self) -> dict[str, np.ndarray]:
        return self.layout.unflatten_numpy(self.get_flat_weights())

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        self.set_flat_weights(self.layout.flatten(weights))

    def get_state(self) -> dict[str, np.ndarray]:
        """Weights and optimizer state, as named NumPy arrays."""
        state = {f"weights/{k}": v for k, v in self.get_weights().items()}
        opt = self.adapter.tree_numpy(self.opt_state)
        state.update({"opt/count": np.asarray(opt.count, np.float32), "opt/mu": opt.mu, "opt/nu": opt.nu})
        return state

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        self.set_weights({k[len("weights/"):]: v for k, v in state.items() if k.startswith("weights/")})
        if "opt/mu" in state:
            self.opt_state = self.adapter.tree_tensor(AdamState(
                np.asarray(state["opt/count"], np.float32), np.asarray(state["opt/mu"], np.float32),
                np.asarray(state["opt/nu"], np.float32)))

    # -- acting --------------------------------------------------------------------------
    def policy_outputs(self, obs: np.ndarray) -> np.ndarray:
        """Distribution inputs (e.g. logits) for a batch of observations, as NumPy."""
        return self.adapter.numpy(self._policy_out(self._params, self.adapter.call_input(np.asarray(obs, np.float32))))

    def forward(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(distribution inputs, values) for a batch of observations, as NumPy.

        The rows are zero-padded to a multiple of FORWARD_ROWS_MULTIPLE: the learner's batch
        size varies with the number of truncated episodes, and compiled frameworks trace once per
        shape. Rows do not depend on the batch they arrive in, so padding changes no number.
        """
        obs = np.asarray(obs, np.float32)
        n = len(obs)
        padded = -(-n // FORWARD_ROWS_MULTIPLE) * FORWARD_ROWS_MULTIPLE
        if padded != n:
            obs = np.concatenate([obs, np.zeros((padded - n,) + obs.shape[1:], np.float32)])
        out, v = self._forward(self._params, self.adapter.call_input(obs))
        return self.adapter.numpy(out)[:n], self.adapter.numpy(v)[:n]

    def compute_actions(self, obs: np.ndarray, uniforms: np.ndarray | None = None) -> np.ndarray:
        """Actions for a batch of observations: sampled from `uniforms` (one per row), or greedy if None."""
        out = self.policy_outputs(obs)
        if uniforms is None:
            return self.dist.greedy_numpy(out)
        return self.dist.sample_numpy(out, uniforms)

    # -- learning ------------------------------------------------------------------------
    def _loss_of_flat(self):
        ops, layout, model, dist, loss = self.ops, self.layout, self.model, self.dist, self.loss

        def loss_of_flat(flat, batch, hp):
            return loss(ops, model, dist, layout.unflatten(ops, flat), batch, hp)

        return loss_of_flat

    def _build_learn_step(self):
        ops, clip = self.ops, self.grad_clip
        vg = self.adapter.value_and_grad(self._loss_of_flat())

        def learn_step(flat, opt_state, batch, hp):
            (loss, stats), grad = vg(flat, batch, hp)
            grad, gnorm = clip_by_global_norm(ops, grad, clip)
            updates, opt_state = adam_update(ops, grad, opt_state, hp["lr"])
            stats = dict(stats)
            stats["total_loss"] = loss
            stats["grad_gnorm"] = gnorm
            return flat + updates, opt_state, stats

        return self.adapter.compile(learn_step)

    def batch_tensors(self, batch: dict[str, np.ndarray]):
        return {k: self.adapter.tensor(v) for k, v in batch.items()}

    def hp_tensors(self, hp: dict[str, float]):
        """Hyperparameters as scalar tensors (inputs, so a schedule never forces a recompile)."""
        return {k: self.adapter.tensor(np.asarray(v, np.float32)) for k, v in hp.items()}

    def learn_on_batch(self, batch, hp) -> dict:
        """One gradient step (loss, clip, Adam) on a minibatch; `batch` and `hp` are NumPy/floats or tensors."""
        if self._learn_step is None:
            self._learn_step = self._build_learn_step()
        if batch and isinstance(next(iter(batch.values())), np.ndarray):
            batch = self.batch_tensors(batch)
        if hp and isinstance(next(iter(hp.values())), (float, int, np.floating)):
            hp = self.hp_tensors(hp)
        self.flat, self.opt_state, stats = self._learn_step(self.flat, self.opt_state, batch, hp)
        self._acting_params = None
        return stats

    def finish_learning(self) -> None:
        """Refresh the acting parameters after a run of learn_on_batch calls."""
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

    def compute_gradients(self, batch, hp: dict[str, float]) -> tuple[np.ndarray, dict[str, float]]:
        """(flat gradient after clipping, stats) without changing the weights."""
        if self._grad_step is None:
            ops, clip = self.ops, self.grad_clip
            vg = self.adapter.value_and_grad(self._loss_of_flat())

            def grad_step(flat, batch, hp):
                (loss, stats), grad = vg(flat, batch, hp)
                grad, gnorm = clip_by_global_norm(ops, grad, clip)
                stats = dict(stats)
                stats["total_loss"] = loss
                stats["grad_gnorm"] = gnorm
                return grad, stats

            self._grad_step = self.adapter.compile(grad_step)
        if batch and isinstance(next(iter(batch.values())), np.ndarray):
            batch = self.batch_tensors(batch)
        grad, stats = self._grad_step(self.flat, batch, self.hp_tensors(hp))
        return self.adapter.numpy(grad), {k: float(self.adapter.numpy(v)) for k, v in stats.items()}

    def apply_gradients(self, grad: np.ndarray, lr: float) -> None:
        if self._apply_step is None:
            ops = self.ops

            def apply_step(flat, opt_state, grad, lr):
                updates, opt_state = adam_update(ops, grad, opt_state, lr)
                return flat + updates, opt_state

            self._apply_step = self.adapter.compile(apply_step)
        self.flat, self.opt_state = self._apply_step(
            self.flat, self.opt_state, self.adapter.tensor(np.asarray(grad, np.float32)),
            self.adapter.tensor(np.asarray(lr, np.float32)))
        self._refresh_acting_params()

    def stats_numpy(self, stats) -> dict[str, float]:
        return {k: float(self.adapter.numpy(v)) for k, v in stats.items()}
