"""Acting by planning against a learned dynamics model (PETS: Chua et al. 2018), in NumPy, in the rollout workers.

Each env step, for each env: a derivative-free optimizer over action sequences of `horizon` steps (the
cross-entropy method, or MPPI), each candidate scored by trajectory sampling through the ensemble (TS-inf: every
candidate is followed by `particles` particles, particle p propagated by member p mod E for the whole horizon,
each step's next state drawn from that member's Gaussian) with the env's reward function; the score is the mean
return over the particles. The first action of the final plan is taken; the plan, shifted by one step, is the
next step's starting point (the env's acting state, zeros at an episode's start).

All draws come from a generator seeded by one uniform of the env's own noise stream per step (and, acting
greedily, by the observation's bits), standard normals by the exact quantile function: an env's actions depend
on its stream and the model's weights only, so planning gives the same bits on every backend and worker count.
Actions are planned in [-1, 1] per dimension; the env receives them scaled to its Box.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from unirl import seeding
from unirl.distributions import Distribution, normal_quantile
from unirl.dynamics import draw, predict_by_member


class PlannedActions(Distribution):
    """The action "distribution" of a planning policy: actions in [-1, 1]^A, scaled to the Box for the env.

    Per env step it takes A + 1 uniforms: A for a uniform random action (exploration option `random`, before
    learning starts) and one that seeds the step's planning."""

    action_dtype = np.float32
    exploration_options = ("random",)

    def __init__(self, low, high):
        self.low = np.asarray(low, np.float32)
        self.high = np.asarray(high, np.float32)
        self.action_shape = tuple(self.low.shape)
        self.dim = int(np.prod(self.action_shape, dtype=np.int64))
        self.num_inputs = self.dim
        self.noise_per_step = self.dim + 1

    def env_actions(self, actions: np.ndarray) -> np.ndarray:
        return to_box(actions, self.low, self.high)


def to_box(actions: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Actions in [-1, 1] (clipped there) scaled to the Box [low, high], float32."""
    a = np.clip(np.asarray(actions, np.float32), -1.0, 1.0)
    return (low + (a + 1.0) * 0.5 * (high - low)).astype(np.float32)


def cem(objective, mean: np.ndarray, rng, population: int, elites: int, iterations: int,
        alpha: float = 0.1, init_std: float = 0.5, lo: float = -1.0, hi: float = 1.0) -> np.ndarray:
    """The cross-entropy method (as PETS runs it): maximise objective(samples [K, ...]) -> [K] over a box.

    Each iteration draws `population` candidates from N(mean, std^2) truncated at 2 std and kept inside the box
    (std at most half the distance to the nearer bound), keeps the `elites` best (ties: the earlier) and moves
    mean and std towards theirs (weight 1 - alpha). Returns the final mean. `cem_batch` solves several
    problems at once."""
    return cem_batch(lambda x: np.asarray(objective(x[0]))[None], np.asarray(mean)[None], [rng], population,
                     elites, iterations, alpha, init_std, lo, hi)[0]


def cem_batch(objective, means: np.ndarray, rngs: list, population: int, elites: int, iterations: int,
              alpha: float = 0.1, init_std: float = 0.5, lo: float = -1.0, hi: float = 1.0) -> np.ndarray:
    """CEM on N problems together: means [N, ...], problem n drawing from rngs[n] only, objective(samples
    [N, K, ...]) -> scores [N, K] (one call for all: the model's rows of every env in one batch). Every step but
    the objective runs per problem on its own arrays, so a problem's result does not depend on the others."""
    means = [np.asarray(m, np.float64) for m in means]
    stds = [np.full_like(m, init_std) for m in means]
    for _ in range(iterations):
        samples = []
        for mean, std, rng in zip(means, stds, rngs):
            std_c = np.minimum(std, np.minimum(mean - lo, hi - mean) / 2.0)
            z = np.clip(normal_quantile(rng.random((population,) + mean.shape)), -2.0, 2.0)
            samples.append(np.clip(mean + std_c * z, lo, hi))
        scores = np.asarray(objective(np.stack(samples)), np.float64)
        for n, x in enumerate(samples):
            best = x[np.argsort(-np.nan_to_num(scores[n], nan=-np.inf), kind="stable")[:elites]]
            means[n] = alpha * means[n] + (1.0 - alpha) * best.mean(axis=0)
            stds[n] = alpha * stds[n] + (1.0 - alpha) * best.std(axis=0)
    return np.stack(means)


def mppi(objective, mean: np.ndarray, rng, population: int, iterations: int,
         temperature: float = 1.0, noise_std: float = 0.5, lo: float = -1.0, hi: float = 1.0) -> np.ndarray:
    """Model-predictive path integral control (Williams et al. 2017): each iteration, the mean of `population`
    perturbed candidates weighted by exp(score / temperature) (scores shifted by their maximum). `mppi_batch`
    solves several problems at once."""
    return mppi_batch(lambda x: np.asarray(objective(x[0]))[None], np.asarray(mean)[None], [rng], population,
                      iterations, temperature, noise_std, lo, hi)[0]


def mppi_batch(objective, means: np.ndarray, rngs: list, population: int, iterations: int,
               temperature: float = 1.0, noise_std: float = 0.5, lo: float = -1.0, hi: float = 1.0) -> np.ndarray:
    """MPPI on N problems together (as cem_batch)."""
    means = [np.asarray(m, np.float64) for m in means]
    for _ in range(iterations):
        samples = [np.clip(m + noise_std * normal_quantile(rng.random((population,) + m.shape)), lo, hi)
                   for m, rng in zip(means, rngs)]
        scores = np.asarray(objective(np.stack(samples)), np.float64)
        for n, x in enumerate(samples):
            sc = np.nan_to_num(scores[n], nan=-np.inf)
            w = np.exp((sc - sc.max()) / temperature)
            means[n] = np.tensordot(w / w.sum(), x, axes=1)
    return np.stack(means)


@dataclass
class Planner:
    """What a planning policy carries to the workers (plain data; the reward and termination functions are
    module-level functions, pickled by reference; no reward function: the model's reward head predicts it).
    Config keys of the same names (algorithms.pets)."""

    reward_fn: object
    termination_fn: object
    act_dim: int
    low: np.ndarray
    high: np.ndarray
    method: str = "cem"
    horizon: int = 25
    population: int = 400
    elites: int = 40
    iterations: int = 5
    alpha: float = 0.1
    particles: int = 20
    mppi_temperature: float = 1.0
    mppi_noise: float = 0.5

    @property
    def state_shape(self) -> tuple:
        """An env's acting state: its last plan [horizon, act_dim], in [-1, 1]."""
        return (self.horizon, self.act_dim)

    def env_actions(self, a: np.ndarray) -> np.ndarray:
        return to_box(a, self.low, self.high)

    def returns(self, policy, obs: np.ndarray, seqs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Trajectory sampling (TS-inf): the mean return over `particles` particles of each candidate action
        sequence seqs [K, H, A] from the observation obs, particle p of every candidate on member p mod E."""
        return self.returns_batch(policy, np.asarray(obs)[None], np.asarray(seqs)[None], [rng])[0]

    def returns_batch(self, policy, obs: np.ndarray, seqs: np.ndarray, rngs: list) -> np.ndarray:
        """`returns` for N envs at once: obs [N, d], seqs [N, K, H, A] -> [N, K]. Each model step is one call for
        every env's rows (row-blocked products: a row's prediction does not depend on the others); the draws, the
        rewards and the ends are computed per env, on arrays of the same shapes whatever N."""
        N, K, H = seqs.shape[:3]
        P = self.particles
        rows = K * P  # row k * P + p: particle p of candidate k, on member p mod E (rows per env: a multiple of E)
        s = [np.broadcast_to(np.asarray(o, np.float32), (rows, obs.shape[-1])).copy() for o in obs]
        total = [np.zeros(rows, np.float64) for _ in range(N)]
        alive = [np.ones(rows, bool) for _ in range(N)]
        for h in range(H):
            a = [np.repeat(seqs[n, :, h].astype(np.float32), P, axis=0) for n in range(N)]
            mean, std = predict_by_member(policy, np.concatenate(s), np.concatenate(a))
            for n in range(N):
                nxt, r = draw(s[n], mean[n * rows:(n + 1) * rows], std[n * rows:(n + 1) * rows], rngs[n])
                if self.reward_fn is not None:
                    r = self.reward_fn(s[n], self.env_actions(a[n]), nxt)
                total[n] += np.where(alive[n], r, 0.0)
                if self.termination_fn is not None:
                    alive[n] &= ~np.asarray(self.termination_fn(nxt), bool)
                s[n] = nxt
        return np.stack([t.reshape(K, P).mean(axis=1) for t in total])

    def plan(self, policy, obs: np.ndarray, starts: np.ndarray, rngs: list) -> np.ndarray:
        """The optimised action sequences [N, H, A] from obs [N, d], starting from `starts` [N, H, A]."""
        def objective(seqs):
            return self.returns_batch(policy, obs, seqs, rngs)

        if self.method == "mppi":
            return mppi_batch(objective, starts, rngs, self.population, self.iterations, self.mppi_temperature,
                              self.mppi_noise)
        return cem_batch(objective, starts, rngs, self.population, self.elites, self.iterations, self.alpha)

    def act(self, policy, obs, noise, state, random: float = 0.0):
        """Policy.act for a planning module: per env, a uniform random action (exploration `random`) or the first
        action of its plan; the plans, as the envs' next acting states."""
        obs = np.asarray(obs, np.float32)
        N, A = len(obs), self.act_dim
        if noise is not None and random:
            return (2.0 * np.asarray(noise[:, :A], np.float32) - 1.0), None, state
        rngs = []
        for n in range(N):
            if noise is not None:
                entropy = [seeding.PLANNING, int(noise[n, A] * 2.0 ** 53)]
            else:  # greedy: keyed by the observation's bits
                entropy = [seeding.PLANNING] + np.ascontiguousarray(obs[n]).view(np.uint32).tolist()
            rngs.append(np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy))))
        if state is None:
            starts = np.zeros((N,) + self.state_shape)
        else:  # each env's last plan, shifted by one step
            starts = np.concatenate([state[:, 1:], np.zeros((N, 1, A), np.float32)], axis=1)
        plans = self.plan(policy, obs, starts, rngs).astype(np.float32)
        return plans[:, 0].copy(), None, (plans if state is not None else None)
