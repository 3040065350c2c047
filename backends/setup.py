"""`aup-tui init`: the `.aup` folder (env.ini + store) and its resources, as `python -m aup.setup`.

CPU and passive counts are not in Auptimizer's env.ini; we keep them as extra keys (`n_cpu`,
`n_passive`), which Auptimizer ignores. GPU, node and AWS resources keep the ids of their
mappings, so an Auptimizer env.ini registers the same resource ids here.
"""

from __future__ import annotations

import os

from .config import _CARDS, EnvConfig, load_env, parse_host, write_env
from .errors import ConfigError
from .store import TinyDBConnector


def read_list(value: str, what: str) -> list[str]:
    """`value` is a file (one entry a line, '#' comments) or a comma-separated list."""
    if os.path.isfile(value):
        try:
            with open(value, encoding="utf-8") as f:
                items = [line.split("#", 1)[0].strip() for line in f]
        except UnicodeDecodeError:
            raise ConfigError(f"--{what} file {value} is not UTF-8 text — give a text file "
                              "with one entry a line") from None
        except OSError as e:
            raise ConfigError(f"cannot read --{what} file {value} ({e.strerror}) — check its permissions") from None
        if any("\0" in item for item in items):
            raise ConfigError(f"--{what} file {value} holds binary data — give a text file with one entry a line")
    else:
        items = [item.strip() for item in value.split(",")]
    items = [item for item in items if item]
    if not items:
        raise ConfigError(f"--{what} {value!r} lists nothing: give a comma-separated list or a file with one entry a line")
    return items


def init_aup(auppath: str, cpu: int = 0, gpu: list[str] | None = None, node: list[str] | None = None,
             aws: list[str] | None = None, passive: bool = False, overwrite: bool = False) -> EnvConfig:
    """Create (or extend) `auppath` with env.ini and the store, registering the resources asked for."""
    auppath = os.path.abspath(auppath)
    path = os.path.join(auppath, "env.ini")
    exists = os.path.isfile(path)
    if exists and not overwrite:
        env = load_env(auppath)  # an Auptimizer env.ini is taken as it is, then extended
    else:
        env = EnvConfig(path=path, auppath=auppath)
    if cpu < 0:
        raise ConfigError(f"--cpu must be 0 or more, got {cpu}")
    for spec in (node or []) + (aws or []):
        parse_host(spec)  # raises a clear error for a bad host spec
    for card in gpu or []:
        if not _CARDS.fullmatch(card):
            raise ConfigError(f"--gpu {card!r} is not a GPU card number (or GPU UUID) "
                              "— give card indices such as --gpu 0,0,1")
    connector = TinyDBConnector(auppath)
    try:
        if overwrite:
            connector.remove_resources()
            env.gpu_mapping, env.node_mapping, env.aws_mapping = {}, {}, {}
        next_rid = max([r["rid"] for r in connector.resources()] + [int(k) for k in _all_ids(env)] + [0]) + 1
        for key, items in (("gpu_mapping", gpu), ("node_mapping", node), ("aws_mapping", aws)):
            for item in items or []:
                getattr(env, key)[str(next_rid)] = item
                next_rid += 1
        if cpu:
            env.extra["n_cpu"] = str(cpu)
        if passive:
            env.extra["n_passive"] = "1"
        write_env(env)
        sync_resources(env, connector)
    finally:
        connector.close()
    return env


def _all_ids(env: EnvConfig) -> list[str]:
    return [*env.gpu_mapping, *env.node_mapping, *env.aws_mapping]


def sync_resources(env: EnvConfig, connector: TinyDBConnector) -> None:
    """Make the store's resources match env.ini (keeps the status of those already there).

    Skipped (two stats) when env.ini's resources are those of the last sync: every command
    syncs, and reading 16,000 cpu slots each time made every command slow."""
    import json

    stamp = json.dumps([env.gpu_mapping, env.node_mapping, env.aws_mapping, env.extra.get("n_cpu"),
                        env.extra.get("n_passive")], sort_keys=True)
    if connector.resources_synced(stamp):
        return
    _sync_resources(env, connector)
    connector.mark_synced(stamp)


def _sync_resources(env: EnvConfig, connector: TinyDBConnector) -> None:
    have = {r["rid"]: r for r in connector.resources()}
    wanted: dict[int, tuple[str, str]] = {}
    for rtype, mapping in (("gpu", env.gpu_mapping), ("node", env.node_mapping), ("aws", env.aws_mapping)):
        for rid, name in mapping.items():
            wanted[int(rid)] = (name, rtype)
    for rtype, key in (("cpu", "n_cpu"), ("passive", "n_passive")):
        try:
            count = int(env.extra.get(key, 0))
        except ValueError:
            raise ConfigError(f"{key} in {env.path} must be a whole number, got {env.extra[key]!r}") from None
        existing = sorted(rid for rid, r in have.items() if r["type"] == rtype)
        for i, rid in enumerate(existing[:count]):
            wanted[rid] = (f"{rtype}{i}" if rtype == "cpu" else "person", rtype)
        top = max([*have, *wanted, 0])  # once, not per new resource: `--cpu 16000` was quadratic
        for i in range(len(existing), count):
            top += 1
            wanted[top] = (f"{rtype}{i}" if rtype == "cpu" else "person", rtype)
    changed = [(rid, name, rtype) for rid, (name, rtype) in sorted(wanted.items())
               if have.get(rid) is None or have[rid]["name"] != name or have[rid]["type"] != rtype]
    if changed:
        connector.add_resources(changed)  # one store write for all of them
    for rid in set(have) - set(wanted):
        if have[rid]["status"] == "free":
            connector.remove_resource(rid)


INIT_FLAGS = {"cpu": "--cpu 4", "gpu": "--gpu 0", "node": "--node user@host", "aws": "--aws user@i-…",
              "passive": "--passive"}


def require_resources(rtype: str, auppath: str, connector: TinyDBConnector) -> None:
    """Refuse to start an experiment that no registered resource could ever run.

    Resources that exist but are taken (by another live process) are fine: the experiment waits
    for them. None of the type at all would wait forever, so it is a ConfigError naming the fix.
    """
    if connector.resources(rtype):
        return
    import shlex

    auppath = os.path.abspath(auppath)
    aup = "" if auppath == os.path.abspath(".aup") else f" --aup {shlex.quote(auppath)}"
    raise ConfigError(f"no '{rtype}' resource in {os.path.join(auppath, 'env.ini')} — add some with "
                      f"`aup-tui init{aup} {INIT_FLAGS.get(rtype, '--' + rtype)}`")
