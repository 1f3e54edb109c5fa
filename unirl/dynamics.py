"""A learned dynamics model on the neutral ops: an ensemble of probabilistic MLPs (Chua et al. 2018, "Deep
Reinforcement Learning in a Handful of Trials using Probabilistic Dynamics Models").

Each member m maps (s, a) to a Gaussian over the change of the observation, s' - s: a mean and a log variance,
the log variance softly bounded between two learned vectors (`max_logvar`, `min_logvar`) so that it can neither
explode nor collapse where there is no data. Inputs and targets are normalised with statistics of the data
(`norm/...`, set from the replay buffer before each training phase, never trained). Members differ by their
initial weights (keyed by (seed, member)) and by their bootstrap weights: each stored transition carries, per
member, a Poisson(1) count that weights it in that member's loss (the online bootstrap of Oza and Russell 2001),
so each member fits its own resample of the data.

The loss is the Gaussian negative log-likelihood summed over members,

    sum_m  sum_i w_im [ (mu_m(x_i) - y_i)^T Sigma_m(x_i)^-1 (mu_m(x_i) - y_i) + log det Sigma_m(x_i) ] / sum_i w_im
           + c (sum max_logvar - sum min_logvar),

with y the normalised target and c small (`logvar_bound_coef`): the bounds are pulled together, so they
end where the data puts them.
"""
from __future__ import annotations

import numpy as np

from unirl import sample_batch as sb
from unirl import seeding
from unirl.distributions import softplus
from unirl.models import Module, ModelConfig, activation, mlp_shapes, orthogonal

#: Replay columns of a dynamics model's rows: the observed change s' - s, and each member's bootstrap weight.
DELTA = "delta"
BOOTSTRAP = "bootstrap"


class EnsembleDynamics(Module):
    """An ensemble of `ensemble_size` probabilistic MLPs (s, a) -> N(mu, diag(exp(logvar))) over s' - s.

    Parameters: `norm/in_mean`, `norm/in_std` (over [s, a]), `norm/out_mean`, `norm/out_std` (over the targets:
    s' - s, and the reward with `reward_head`), member m's tower `m{m}/{i}/w|b` (the last layer's outputs: the
    targets' means, then their raw log variances), and the log-variance bounds `max_logvar`, `min_logvar`. With
    `reward_head` the model also predicts the step's reward (its last target column), for envs whose reward is
    not written down. A planner (unirl.planning) may ride along as `planner`: the module then acts by planning
    (`act`), keeping each env's last plan as its acting state."""

    kind = "dynamics"

    def __init__(self, obs_dim: int, act_dim: int, dist, config: ModelConfig, ensemble_size: int = 5,
                 planner=None, reward_head: bool = False):
        self.act_dim = int(act_dim)
        self.ensemble_size = int(ensemble_size)
        self.reward_head = bool(reward_head)
        #: Target columns: s' - s, and the reward with a reward head.
        self.out_dim = int(obs_dim) + int(self.reward_head)
        d, n = self.out_dim, int(obs_dim) + int(act_dim)
        shapes = {"norm/in_mean": (n,), "norm/in_std": (n,), "norm/out_mean": (d,), "norm/out_std": (d,)}
        sizes = [n] + [int(h) for h in config.hidden_sizes] + [2 * d]
        for m in range(self.ensemble_size):
            shapes.update(mlp_shapes(f"m{m}", sizes))
        shapes.update({"max_logvar": (d,), "min_logvar": (d,)})
        super().__init__(obs_dim, dist, config, shapes, {})
        self.layers = len(sizes) - 1
        self.planner = planner

    @property
    def acting_state_shape(self):
        return None if self.planner is None else self.planner.state_shape

    def init_params(self, seed: int) -> dict[str, np.ndarray]:
        """Orthogonal weights per member from (seed, member) (gain sqrt 2, 1 on the output layer), zero biases,
        identity normalisation, log-variance bounds [-10, 0.5] as in PETS."""
        params = {}
        for m in range(self.ensemble_size):
            rng = seeding.generator(seed, seeding.MODEL_INIT, m)
            for i in range(self.layers):
                w = f"m{m}/{i}/w"
                params[w] = orthogonal(rng, self.layout.shapes[w], 1.0 if i == self.layers - 1 else np.sqrt(2.0))
                params[f"m{m}/{i}/b"] = np.zeros(self.layout.shapes[f"m{m}/{i}/b"], np.float32)
        for name in ("norm/in_mean", "norm/out_mean"):
            params[name] = np.zeros(self.layout.shapes[name], np.float32)
        for name in ("norm/in_std", "norm/out_std"):
            params[name] = np.ones(self.layout.shapes[name], np.float32)
        params["max_logvar"] = np.full(self.layout.shapes["max_logvar"], 0.5, np.float32)
        params["min_logvar"] = np.full(self.layout.shapes["min_logvar"], -10.0, np.float32)
        return {k: params[k] for k in self.layout.names}

    @property
    def forward_rows_multiple(self) -> int:
        return 64

    # -- the math ------------------------------------------------------------------------------------------
    def inputs(self, ops, params, obs, actions):
        """[s, a] normalised with the data's statistics (constants to the gradient)."""
        x = ops.concat([ops.cast_float(obs), ops.cast_float(actions)], axis=-1)
        return (x - ops.stop_gradient(params["norm/in_mean"])) / ops.stop_gradient(params["norm/in_std"])

    def member(self, ops, params, m: int, x):
        """Member m on normalised inputs: (mean, log variance) of the normalised change, the log variance softly
        held inside [min_logvar, max_logvar]."""
        act = activation(ops, self.config.activation)
        for i in range(self.layers - 1):
            x = act(self.dense(ops, params, f"m{m}/{i}", x))
        mean, raw = ops.split(self.dense(ops, params, f"m{m}/{self.layers - 1}", x), [self.out_dim] * 2, axis=-1)
        hi, lo = params["max_logvar"], params["min_logvar"]
        logvar = hi - softplus(ops, hi - raw)
        return mean, lo + softplus(ops, logvar - lo)

    def targets(self, ops, batch):
        """The targets of a batch of rows: s' - s, and the reward with a reward head."""
        if not self.reward_head:
            return batch[DELTA]
        return ops.concat([batch[DELTA], ops.reshape(batch[sb.REWARDS], (-1, 1))], axis=-1)

    def predict(self, ops, params, obs, actions):
        """Every member's prediction for the same rows, in the targets' units: [(mean, std), ...]."""
        x = self.inputs(ops, params, obs, actions)
        out_mean, out_std = ops.stop_gradient(params["norm/out_mean"]), ops.stop_gradient(params["norm/out_std"])
        return [(mean * out_std + out_mean, ops.exp(0.5 * logvar) * out_std)
                for mean, logvar in (self.member(ops, params, m, x) for m in range(self.ensemble_size))]

    def forward_inference(self, ops, params, obs):
        raise NotImplementedError("a dynamics model predicts from observations and actions: use predict()")

    forward_train = forward_inference

    def act(self, policy, obs, noise, state, **explore):
        if self.planner is None:
            raise NotImplementedError("this dynamics model has no planner to act with")
        return self.planner.act(policy, obs, noise, state, **explore)


def member_step(ops, module, params, batch):
    """A planner's model call: rows grouped by member (batch "obs" [E, R, d], "actions" [E, R, a]) -> each row's
    predicted targets' means and standard deviations from its own member, {"mean", "std"} [E * R, out_dim]."""
    means, stds = [], []
    obs, actions = batch[sb.OBS], batch[sb.ACTIONS]
    for m in range(module.ensemble_size):
        x = module.inputs(ops, params, obs[m], actions[m])
        mean, logvar = module.member(ops, params, m, x)
        means.append(mean * params["norm/out_std"] + params["norm/out_mean"])
        stds.append(ops.exp(0.5 * logvar) * params["norm/out_std"])
    return {"mean": ops.concat(means, axis=0), "std": ops.concat(stds, axis=0)}


def predict_by_member(policy, obs: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's predicted change (mean, std) [B, d] from its own member: row r from member r mod E (B a multiple
    of E), all in one compiled call (rows grouped by member, so every call of a size has the same shapes)."""
    E, B = policy.module.ensemble_size, len(obs)
    R = B // E
    padded = -(-R // 64) * 64  # each member's rows zero-padded to a multiple of 64, as every forward pass

    def grouped(x):
        x = np.asarray(x, np.float32)[order].reshape(E, R, -1)
        return np.concatenate([x, np.zeros((E, padded - R, x.shape[-1]), np.float32)], axis=1)

    order = np.argsort(np.arange(B) % E, kind="stable")
    out = policy.call(member_step, {sb.OBS: grouped(obs), sb.ACTIONS: grouped(actions)})
    d = out["mean"].shape[-1]
    mean, std = np.empty((B, d), np.float32), np.empty((B, d), np.float32)
    mean[order] = out["mean"].reshape(E, padded, d)[:, :R].reshape(B, d)
    std[order] = out["std"].reshape(E, padded, d)[:, :R].reshape(B, d)
    return mean, std


def draw(obs: np.ndarray, mean: np.ndarray, std: np.ndarray, rng: np.random.Generator):
    """(next observations, rewards or None) drawn from predicted targets: s + mu + sigma z, and with a reward head
    (a last target column) the reward's mu + sigma z; z standard normals from `rng` by the exact quantile function
    (the same bits on every machine)."""
    from unirl.distributions import normal_quantile

    obs = np.asarray(obs, np.float32)
    z = normal_quantile(rng.random(mean.shape)).astype(np.float32)
    out = mean + std * z
    d = obs.shape[-1]
    return obs + out[:, :d], (out[:, d].astype(np.float64) if out.shape[-1] > d else None)


def sample_next(policy, obs: np.ndarray, actions: np.ndarray, rng: np.random.Generator):
    """(next observations, predicted rewards or None) drawn from the ensemble, row r on member r mod E (`draw`)."""
    mean, std = predict_by_member(policy, obs, actions)
    return draw(obs, mean, std, rng)


def gaussian_nll(ops, module, params, batch, hp):
    """The ensemble's Gaussian negative log-likelihood of the normalised changes, each member weighting each row
    by its bootstrap count (module docstring), plus the log-variance bounds' pull."""
    x = module.inputs(ops, params, batch[sb.OBS], batch[sb.ACTIONS])
    y = (module.targets(ops, batch) - ops.stop_gradient(params["norm/out_mean"])) \
        / ops.stop_gradient(params["norm/out_std"])
    weights = ops.split(batch[BOOTSTRAP], [1] * module.ensemble_size, axis=-1)
    nll, mse = 0.0, 0.0
    for m, w in enumerate(weights):
        w = ops.reshape(w, (-1,))
        mean, logvar = module.member(ops, params, m, x)
        err = ops.square(mean - y)
        rows = ops.sum(err * ops.exp(-logvar) + logvar, axis=-1)
        total = ops.maximum(ops.sum(w), 1.0)
        nll = nll + ops.sum(w * rows) / total
        mse = mse + ops.sum(w * ops.mean(err, axis=-1)) / total
    bound = hp["logvar_bound_coef"] * (ops.sum(params["max_logvar"]) - ops.sum(params["min_logvar"]))
    k = float(module.ensemble_size)
    return nll + bound, {"model_nll": ops.stop_gradient(nll) / k, "model_mse": ops.stop_gradient(mse) / k,
                         "max_logvar": ops.mean(ops.stop_gradient(params["max_logvar"]))}


def normalization(obs: np.ndarray, actions: np.ndarray, delta: np.ndarray,
                  rewards: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The `norm/...` parameters for this data (the targets: delta, and the rewards if given): per-column mean and
    standard deviation (float64 sums; a standard deviation below 1e-6, a constant column, counts as 1)."""
    def stats(x):
        x = np.asarray(x, np.float64).reshape(len(x), -1)
        mean, std = x.mean(axis=0), x.std(axis=0)
        return mean.astype(np.float32), np.where(std < 1e-6, 1.0, std).astype(np.float32)

    in_mean, in_std = stats(np.concatenate([np.asarray(obs, np.float64).reshape(len(obs), -1),
                                            np.asarray(actions, np.float64).reshape(len(actions), -1)], axis=1))
    targets = np.asarray(delta, np.float64).reshape(len(delta), -1)
    if rewards is not None:
        targets = np.concatenate([targets, np.asarray(rewards, np.float64).reshape(-1, 1)], axis=1)
    out_mean, out_std = stats(targets)
    return {"norm/in_mean": in_mean, "norm/in_std": in_std, "norm/out_mean": out_mean, "norm/out_std": out_std}


def refit_normalization(policy, data: dict) -> None:
    """Set a dynamics model's `norm/...` parameters to the statistics of `data` (replay rows with OBS, ACTIONS,
    DELTA, and REWARDS where the model has a reward head): what PETS and MBPO do before each training phase."""
    weights = policy.get_weights()
    rewards = data[sb.REWARDS] if policy.module.reward_head else None
    weights.update(normalization(data[sb.OBS], data[sb.ACTIONS], data[DELTA], rewards))
    policy.set_weights(weights)


def bootstrap_weights(run_seed: int, first_row: int, rows: int, ensemble_size: int) -> np.ndarray:
    """Poisson(1) bootstrap counts [rows, ensemble_size] for rows first_row.. of the run's data, keyed by (run
    seed, first row): the same whatever the backend and the number of workers."""
    u = seeding.generator(run_seed, seeding.BOOTSTRAP, first_row).random((rows, ensemble_size))
    return np.searchsorted(POISSON_1_CDF, u, side="right").astype(np.float32)


#: P(K <= k) for K ~ Poisson(1), k = 0..15, from the literal e^-1 (no library call whose last bits could vary).
POISSON_1_CDF = np.cumsum([0.36787944117144233 / float(np.prod(np.arange(1, k + 1, dtype=np.float64)))
                           for k in range(16)])


