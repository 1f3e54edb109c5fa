"""Seeds for every random stream, derived from the run seed and a global index with SeedSequence.

Nothing here depends on a worker's index: how envs are split over workers never changes a
number. Streams are told apart by a fixed integer tag in the SeedSequence's entropy.
"""
from __future__ import annotations

import numpy as np

# Stream tags: part of the entropy, so each purpose gets an independent stream.
ENV_RESET = 1
ACTION_NOISE = 2
MODEL_INIT = 3
LEARNER = 4
EVALUATION = 5
# Population evaluation (ES, ARS): the shared noise table; a perturbation's noise offset and episode seed.
NOISE_TABLE = 6
PERTURBATION = 7
PERTURBATION_EPISODE = 8


# A replaced worker's envs and noise (unirl.execution.recovery): keyed by (run seed, env index, restart count).
RESTART_ENV_RESET = 9
RESTART_ACTION_NOISE = 10
# The learner's own noise (SAC's reparameterised samples, TD3's target smoothing): keyed by (run seed, step block).
LEARNER_NOISE = 12
# A multi-agent slot's action noise (unirl.multi_agent.worker): keyed by (run seed, global env index, agent index).
MA_ACTION_NOISE = 13
# (14: a multi-agent policy's initial weights; 15: the self-play league's draws; unirl.multi_agent.)
# A dynamics model's bootstrap counts (unirl.dynamics): keyed by (run seed, the first row's index in the run's data).
BOOTSTRAP = 16
# A planner's draws when acting greedily (unirl.planning): keyed by the observation's bits.
PLANNING = 17
# MBPO's model phases (algorithms.mbpo): the model's minibatches and the rollouts, keyed by (run seed, phase, purpose).
MODEL_ROLLOUT = 18
# A self-play game's draws (AlphaZero: root noise, move sampling; unirl.execution.self_play): keyed by (run seed,
# global game index); an arena game's by (run seed, evaluation game index).
SELF_PLAY = 19
ARENA = 20


def seed_sequence(run_seed: int, stream: int, index: int = 0, *more: int) -> np.random.SeedSequence:
    """The SeedSequence for (run seed, stream, global index[, more indices])."""
    return np.random.SeedSequence([int(run_seed), int(stream), int(index), *(int(m) for m in more)])


def env_reset_seed(run_seed: int, env_index: int, stream: int = ENV_RESET, *more: int) -> int:
    """The integer seed given to the Gymnasium env with this global index at its first reset."""
    return int(seed_sequence(run_seed, stream, env_index, *more).generate_state(1, np.uint32)[0])


def generator(run_seed: int, stream: int, index: int = 0, *more: int) -> np.random.Generator:
    """A counter-based (Philox) generator for (run seed, stream, global index[, more indices])."""
    return np.random.Generator(np.random.Philox(seed_sequence(run_seed, stream, index, *more)))


class EnvNoise:
    """Uniform noise for exploration, one independent stream per global env index.

    Each env consumes exactly `per_step` uniforms per step, drawn in blocks for speed; the
    numbers an env sees depend only on (run seed, env index, step), not on which worker hosts it.
    """

    def __init__(self, run_seed: int, env_indices, block: int = 1024, stream: int = ACTION_NOISE, per_step: int = 1,
                 more: tuple = ()):
        self._gens = [generator(run_seed, stream, i, *more) for i in env_indices]
        self._block = block
        self._per_step = int(per_step)
        self._buf = np.empty((len(self._gens), 0, self._per_step))
        self._pos = 0

    def uniforms(self) -> np.ndarray:
        """`per_step` uniforms in [0, 1) per env, as float64 of shape [num_envs, per_step]."""
        if self._pos >= self._buf.shape[1]:
            self._buf = np.stack([g.random(self._block * self._per_step).reshape(self._block, self._per_step)
                                  for g in self._gens])
            self._pos = 0
        u = self._buf[:, self._pos]
        self._pos += 1
        return u

    def get_state(self) -> dict:
        return {"gens": [g.bit_generator.state for g in self._gens], "buf": self._buf.copy(), "pos": self._pos}

    def set_state(self, state: dict) -> None:
        for g, s in zip(self._gens, state["gens"]):
            g.bit_generator.state = s
        self._buf = np.asarray(state["buf"])
        self._pos = int(state["pos"])


class StepNormals:
    """Standard normals for a learner's gradient steps: step s gets a [rows, width] float32 array that depends
    only on (run seed, s, rows, width), drawn in blocks of `block` steps (one generator keyed by (run seed,
    block index) each) and turned into normals by the exact normal quantile. Nothing to checkpoint: a
    resumed run asks for the same steps and gets the same numbers."""

    def __init__(self, run_seed: int, block: int = 64):
        self.run_seed, self.block = int(run_seed), int(block)
        self._key, self._normals = None, None

    def __call__(self, step: int, rows: int, width: int) -> np.ndarray:
        from unirl.distributions import normal_quantile

        b = step // self.block
        if self._key != (b, rows, width):
            u = generator(self.run_seed, LEARNER_NOISE, b, rows, width).random((self.block, rows, width))
            self._key, self._normals = (b, rows, width), normal_quantile(u).astype(np.float32)
        return self._normals[step % self.block]
