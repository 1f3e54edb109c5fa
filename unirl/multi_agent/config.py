"""The `multi_agent` config key: which policies exist, which agent acts with which, which learn, and self-play.

    "multi_agent": {
        "policies": {"main": {}, "opponent": {"lr": 1e-4}},   # id -> overrides of the algorithm's config
        "policy_mapping": {"player_0": "main", "player_1": "opponent"},   # or "module:fn", fn(agent_id) -> id
        "policies_to_train": ["main"],                         # default: every policy
        "self_play": {"learner": "main", "opponent": "opponent", ...},   # see unirl.multi_agent.league
    }

Without `policies` every agent shares one policy, "shared" (parameter sharing). With several policies and no
mapping, an agent maps to the policy of its own name.
"""
from __future__ import annotations

from unirl.errors import UnirlError, did_you_mean

KEYS = ("policies", "policy_mapping", "policies_to_train", "self_play")
#: The policy every agent shares when `policies` is not given.
SHARED = "shared"
#: Config keys a policy's overrides may not change (they are the run's, not a policy's).
RUN_KEYS = ("env", "env_config", "backend", "backend_options", "num_workers", "num_envs_per_worker",
            "train_batch_size", "seed", "multi_agent", "recreate_failed_workers", "worker_timeout_s",
            "max_worker_restarts", "framework", "deterministic", "num_threads")


def check_multi_agent(config) -> None:
    """Validate the `multi_agent` key's shape (agents are checked against the env when the algorithm is built)."""
    from unirl.multi_agent.env import _constructor

    ma = config.multi_agent
    for key in ma:
        if key not in KEYS:
            raise UnirlError(f"unknown multi_agent key `{key}`." + did_you_mean(key, KEYS)
                             + f" Valid keys: {', '.join(KEYS)}.")
    policies = ma.get("policies", {SHARED: {}})
    if not isinstance(policies, dict) or not policies or not all(
            isinstance(k, str) and isinstance(v, dict) for k, v in policies.items()):
        raise UnirlError(f"multi_agent `policies` must map policy ids to config overrides (a dict of dicts), "
                         f"got {policies!r}.")
    for pid, overrides in policies.items():
        bad = [k for k in overrides if k in RUN_KEYS]
        if bad:
            raise UnirlError(f"multi_agent policy `{pid}` overrides {bad}: those keys belong to the whole run; a "
                             "policy may override learning keys (lr, gamma, model, ...).")
        if overrides:
            config.replace(**overrides, multi_agent={})  # unknown keys and bad values get the usual errors
    mapping = ma.get("policy_mapping")
    if mapping is not None and not isinstance(mapping, (dict, str)):
        raise UnirlError(f"multi_agent `policy_mapping` must be a dict {{agent: policy id}} or \"module:fn\", got "
                         f"{mapping!r}.")
    if isinstance(mapping, dict):
        unknown = sorted({p for p in mapping.values() if p not in policies})
        if unknown:
            raise UnirlError(f"multi_agent `policy_mapping` names policies {unknown} that `policies` does not "
                             f"define ({sorted(policies)})." + did_you_mean(unknown[0], list(policies)))
    train = ma.get("policies_to_train")
    if train is not None:
        if not isinstance(train, list) or any(p not in policies for p in train):
            raise UnirlError(f"multi_agent `policies_to_train` must list policy ids among {sorted(policies)}, got "
                             f"{train!r}.")
    if "self_play" in ma:
        from unirl.multi_agent.league import check_self_play

        check_self_play(ma["self_play"], policies)
    _constructor(config.env)  # the env's module imports (else: which extra to install)


def policy_ids(config) -> list[str]:
    return sorted(config.multi_agent.get("policies", {SHARED: {}}))


def policy_config(config, pid: str):
    """The config policy `pid` learns with: the run's config with the policy's overrides."""
    overrides = config.multi_agent.get("policies", {SHARED: {}})[pid]
    d = config.to_dict()
    d.update(overrides)
    d["multi_agent"] = {}
    return type(config).from_dict(d)


def mapping(config, agents: list[str], num_envs: int) -> dict:
    """{global env index: {agent: policy id}} for the run's envs (an error names an agent with no policy).

    A mapping function is called as fn(agent_id) or, if it takes two arguments, fn(agent_id, env_index) (so seats
    can alternate over envs, as self-play does); a dict maps each agent id alike in every env."""
    spec = config.multi_agent.get("policy_mapping")
    if spec is None and "self_play" in config.multi_agent:
        from unirl.multi_agent.league import seat_mapping

        return seat_mapping(config.multi_agent["self_play"], agents, num_envs)
    if isinstance(spec, str):
        import inspect

        from unirl.loading import import_attr

        fn = import_attr(spec, "policy mapping function", spec)
        try:
            two = len(inspect.signature(fn).parameters) >= 2
        except (TypeError, ValueError):
            two = False
        table = {g: {a: (fn(a, g) if two else fn(a)) for a in agents} for g in range(num_envs)}
    else:
        one = _agent_mapping(config, agents, spec)
        table = {g: dict(one) for g in range(num_envs)}
    ids = policy_ids(config)
    for g, row in table.items():
        bad = {a: p for a, p in row.items() if p not in ids}
        if bad:
            raise UnirlError(f"multi_agent `policy_mapping` maps agents to unknown policies {bad} (env {g}); "
                             f"policies: {ids}.")
    return table


def _agent_mapping(config, agents: list[str], spec) -> dict:
    ids = policy_ids(config)
    if isinstance(spec, dict):
        missing = [a for a in agents if a not in spec]
        if missing:
            raise UnirlError(f"multi_agent `policy_mapping` has no policy for agents {missing} of the env "
                             f"(its agents: {agents}).")
        extra = [a for a in spec if a not in agents]
        if extra:
            raise UnirlError(f"multi_agent `policy_mapping` names agents {extra} the env does not have "
                             f"(its agents: {agents})." + did_you_mean(extra[0], agents))
        out = {a: spec[a] for a in agents}
    elif len(ids) == 1:
        out = {a: ids[0] for a in agents}
    else:
        missing = [a for a in agents if a not in ids]
        if missing:
            raise UnirlError(f"multi_agent has policies {ids} and no `policy_mapping`: agents {missing} have no policy "
                             "of their name; give `policy_mapping`.")
        out = {a: a for a in agents}
    return out
