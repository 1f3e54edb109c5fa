"""Algorithm registry: names to import paths, loaded only when asked for."""
from __future__ import annotations

from unirl.loading import load

ALGORITHMS = {
    "PPO": "unirl.algorithms.ppo:PPO",
    "DQN": "unirl.algorithms.dqn:DQN",
    "APEX": "unirl.algorithms.apex:ApeX",
    "ES": "unirl.algorithms.es:ES",
    "ARS": "unirl.algorithms.ars:ARS",
    "A2C": "unirl.algorithms.a2c:A2C",
    "A3C": "unirl.algorithms.a3c:A3C",
    "IMPALA": "unirl.algorithms.impala:IMPALA",
}


def get_algorithm_class(name: str):
    """The Algorithm class registered as `name` (or given as "pkg.module:Class")."""
    return load(name, ALGORITHMS, "algorithm")
