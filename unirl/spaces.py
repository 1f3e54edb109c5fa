"""Dict observations as one flat vector: what a module's torso reads, and the action mask beside it.

PettingZoo's board games (and many Gymnasium envs) observe a `Dict`: `{"observation": Box, "action_mask":
Box(0, 1, (n,))}`. unirl's batches keep one observation array per step, so a Dict observation travels
flattened: every key but the mask in the Dict's (sorted) key order (a Box flattened, a Discrete one-hot),
then the mask's n entries last. `FlatDict` is that flat Box and remembers the layout, so `build_module`
gives the module a torso over the features only and masks the head with the last n entries (a masked
action's logit or Q-value becomes `MASKED`, so it is never sampled, never the argmax, and has zero
probability in log-probs and entropies).
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np

from unirl.errors import UnirlError

#: The logit (or Q-value) a masked action gets: exp() of it is exactly 0 in float32 and float64, and it is
#: finite, so 0 * log p stays 0 in entropies and gradients through masked entries are exactly 0.
MASKED = -1e9
#: The Dict key PettingZoo's classic games (and Gymnasium's convention) use for the legal-action mask.
MASK_KEY = "action_mask"


class FlatDict(gym.spaces.Box):
    """A Dict observation space flattened to a float32 vector: `feature_size` features, then `mask_size`
    mask entries (0 without a mask). `parts` lists (key, kind, size) in order ("box" or "discrete")."""

    def __init__(self, parts: list, mask_size: int, low, high, shapes: list | None = None):
        super().__init__(low=np.asarray(low, np.float32), high=np.asarray(high, np.float32), dtype=np.float32)
        self.parts = [tuple(p) for p in parts]
        self.mask_size = int(mask_size)
        #: Each part's own shape (a Box key's, or (n,) for a one-hot Discrete key).
        self.shapes = [tuple(sh) for sh in shapes] if shapes is not None else [(p[2],) for p in self.parts]

    @property
    def feature_size(self) -> int:
        return int(self.shape[0]) - self.mask_size

    def flatten(self, obs: dict) -> np.ndarray:
        """One observation (a dict) as this space's flat float32 vector."""
        out = []
        for key, kind, size in self.parts:
            if kind == "discrete":
                v = np.zeros(size, np.float32)
                v[int(obs[key])] = 1.0
                out.append(v)
            else:
                out.append(np.asarray(obs[key], np.float32).reshape(-1))
        if self.mask_size:
            out.append(np.asarray(obs[MASK_KEY], np.float32).reshape(-1))
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def __eq__(self, other):
        return (isinstance(other, FlatDict) and super().__eq__(other) and self.parts == other.parts
                and self.mask_size == other.mask_size and self.shapes == other.shapes)

    __hash__ = gym.spaces.Box.__hash__

    def __repr__(self) -> str:
        return f"FlatDict({[p[0] for p in self.parts]}, mask={self.mask_size})"


def flat_dict_space(space: gym.spaces.Dict, action_space=None) -> FlatDict:
    """The FlatDict of a Dict observation space (nested Dicts, Tuples and Text keys are refused in one sentence)."""
    parts, lows, highs, shapes, mask = [], [], [], [], 0
    for key, sub in space.spaces.items():
        if key == MASK_KEY:
            mask = int(np.prod(sub.shape))
            if action_space is not None and isinstance(action_space, gym.spaces.Discrete) and mask != action_space.n:
                raise UnirlError(f"the observation's `{MASK_KEY}` has {mask} entries but the action space "
                                 f"{action_space} has {action_space.n} actions.")
            continue
        if isinstance(sub, gym.spaces.Box):
            image = len(sub.shape) == 3
            others = [k for k in space.spaces if k not in (key, MASK_KEY)]
            if image and others:
                raise UnirlError(f"Dict observation key `{key}` is an image {sub.shape} beside other keys {others}: "
                                 "unirl's Dict encoder gives a convolutional torso to an image alone (with or "
                                 "without an action mask); drop the other keys (gymnasium's FilterObservation) or "
                                 "encode them into the image.")
            n = int(np.prod(sub.shape))
            parts.append((key, "box", n))
            shapes.append(tuple(sub.shape))
            lows.append(np.broadcast_to(np.asarray(sub.low, np.float32), sub.shape).reshape(-1))
            highs.append(np.broadcast_to(np.asarray(sub.high, np.float32), sub.shape).reshape(-1))
        elif isinstance(sub, gym.spaces.Discrete):
            parts.append((key, "discrete", int(sub.n)))
            shapes.append((int(sub.n),))
            lows.append(np.zeros(int(sub.n), np.float32))
            highs.append(np.ones(int(sub.n), np.float32))
        elif isinstance(sub, gym.spaces.Text):
            raise UnirlError(f"Dict observation key `{key}` is a Text space, which unirl's modules cannot encode; "
                             "drop it with gymnasium.wrappers.FilterObservation (or encode it yourself in an "
                             "ObservationWrapper).")
        else:
            raise UnirlError(f"Dict observation key `{key}` is a {type(sub).__name__} space; unirl's Dict encoder "
                             "takes Box and Discrete keys (and an `action_mask`); flatten it in an ObservationWrapper.")
    if mask:
        lows.append(np.zeros(mask, np.float32))
        highs.append(np.ones(mask, np.float32))
    if not parts:
        raise UnirlError(f"Dict observation space {space} has no key besides `{MASK_KEY}` to observe.")
    return FlatDict(parts, mask, np.concatenate(lows), np.concatenate(highs), shapes)


def flat_space(space, action_space=None):
    """`space` as unirl's modules take it: a Dict as its FlatDict, anything else unchanged."""
    if isinstance(space, gym.spaces.Dict):
        return flat_dict_space(space, action_space)
    return space


class FlattenDictObservation(gym.ObservationWrapper):
    """A single-agent Gymnasium env with Dict observations seen through its FlatDict (masks included)."""

    def __init__(self, env):
        super().__init__(env)
        self.observation_space = flat_dict_space(env.observation_space, env.action_space)

    def observation(self, obs):
        return self.observation_space.flatten(obs)
