"""`aup-tui init`: the `.aup` folder (env.ini + store) and its resources, as `python -m aup.setup`.

CPU and passive counts are not in Auptimizer's env.ini; we keep them as extra keys (`n_cpu`,
`n_passive`), which Auptimizer ignores, as Ray's address and job slots (`ray_address`, `n_ray`).
GPU, node and AWS resources keep the ids of their mappings, so an Auptimizer env.ini registers
the same resource ids here.
"""

from __future__ import annotations

import os
from typing import Any

from .env_ini import GPU_CARDS, EnvConfig, parse_host, write_env
from .errors import ConfigError
from .store import TinyDBConnector

#: how many Ray jobs may be in Ray at once (`n_ray`; each experiment's n_parallel caps it)
RAY_SLOTS = 32


def read_list(value: str, what: str) -> list[str]:
    """`value` is a file (one entry a line, '#' comments) or a comma-separated list."""
    if os.path.isfile(value):
        try:
            with open(value, encoding="utf-8") as f:
                items = [line.split("#", 1)[0].strip() for line in f]
        except UnicodeDecodeError:
            raise ConfigError(
                f"--{what} file {value} is not UTF-8 text — give a text file with one entry a line"
            ) from None
        except OSError as e:
            raise ConfigError(
                f"cannot read --{what} file {value} ({e.strerror}) — check its permissions"
            ) from None
        if any("\0" in item for item in items):
            raise ConfigError(
                f"--{what} file {value} holds binary data — give a text file with one entry a line"
            )
    else:
        items = [item.strip() for item in value.split(",")]
    items = [item for item in items if item]
    if not items:
        raise ConfigError(
            f"--{what} {value!r} lists nothing: give a comma-separated list or a file with one entry a line"
        )
    return items


def init_aup(
    auppath: str,
    cpu: int = 0,
    gpu: list[str] | None = None,
    node: list[str] | None = None,
    aws: list[str] | None = None,
    passive: bool = False,
    overwrite: bool = False,
    ray: str | None = None,
) -> EnvConfig:
    """Create `auppath` with env.ini and the store, registering the resources asked for.

    An existing env.ini is replaced (with its resource list) only with `overwrite`, as
    Auptimizer's setup refuses: adding to it silently made `init` twice a different thing.

    `ray`: Ray's address (`auto`: the cluster this machine is in; "": a local Ray started for
    each run), with RAY_SLOTS job slots (`n_ray`, which env.ini may change)."""
    auppath = os.path.abspath(auppath)
    path = os.path.join(auppath, "env.ini")
    if cpu < 0:
        raise ConfigError(f"--cpu must be 0 or more, got {cpu}")
    for flag, specs in (("--node", node), ("--aws", aws)):
        for spec in specs or []:
            check_host_entry(spec, flag)
    for card in gpu or []:
        if not GPU_CARDS.fullmatch(card):
            raise ConfigError(
                f"--gpu {card!r} is not a GPU card number (or GPU UUID) "
                "— give card indices such as --gpu 0,0,1"
            )
    if os.path.isfile(path) and not overwrite:
        raise ConfigError(
            f"{path} already exists: nothing changed — add --overwrite to replace it and its "
            "resource list (give every resource you want), or edit it"
        )
    env = EnvConfig(path=path, auppath=auppath)
    connector = TinyDBConnector(auppath)
    try:
        if overwrite:
            connector.remove_resources()
        next_rid = max([r["rid"] for r in connector.resources()] + [0]) + 1
        for key, items in (("gpu_mapping", gpu), ("node_mapping", node), ("aws_mapping", aws)):
            for item in items or []:
                getattr(env, key)[str(next_rid)] = item
                next_rid += 1
        if cpu:
            env.extra["n_cpu"] = str(cpu)
        if passive:
            env.extra["n_passive"] = "1"
        if ray is not None:
            env.extra["ray_address"] = ray.strip()
            env.extra["n_ray"] = str(RAY_SLOTS)
        write_env(env)
        sync_resources(env, connector)
    finally:
        connector.close()
    return env


#: host names that are a documentation's stand-in, never a machine someone means
_PLACEHOLDER_HOSTS = {
    "host",
    "hostname",
    "yourhost",
    "your-host",
    "your_host",
    "myhost",
    "remote-host",
    "server",
    "address",
    "ip",
    "node",
    "instance",
    "instance-id",
    "example.com",
}


def check_host_entry(spec: str, flag: str = "--node") -> None:
    """Refuse a malformed `user@host[:port] [key]` entry, and a placeholder copied from the
    docs (`user@host`, `<user>@<host>`, `user@i-…`): it would only fail later, on every job."""
    example = "--aws ubuntu@i-0123456789abcdef0" if flag == "--aws" else "--node alice@10.0.0.5:22"
    first = spec.split()[0] if isinstance(spec, str) and spec.split() else ""
    if any(c in first for c in "<>{}[]") or "…" in first or "..." in first:
        raise ConfigError(
            f"{flag} {spec!r} is a placeholder, not a host — give the real user and address, e.g. {example}"
        )
    try:
        host = parse_host(spec)
    except ConfigError as exc:
        raise ConfigError(f"{flag}: {exc}") from None
    if host.host.lower() in _PLACEHOLDER_HOSTS:
        raise ConfigError(
            f"{flag} {spec!r} is a placeholder, not a host — give the real user and address, e.g. {example}"
        )


def sync_resources(env: EnvConfig, connector: TinyDBConnector) -> None:
    """Make the store's resources match env.ini (keeps the status of those already there).

    Skipped (two stats) when env.ini's resources are those of the last sync: every command
    syncs, and reading 16,000 cpu slots each time made every command slow."""
    import json

    stamp = json.dumps(
        [
            env.gpu_mapping,
            env.node_mapping,
            env.aws_mapping,
            env.extra.get("n_cpu"),
            env.extra.get("n_passive"),
            env.extra.get("n_ray"),
        ],
        sort_keys=True,
    )
    if connector.resources_synced(stamp):
        return
    _sync_resources(env, connector)
    connector.mark_synced(stamp)


def _slot_name(rtype: str, i: int) -> str:
    return "person" if rtype == "passive" else f"{rtype}{i}"


def _sync_resources(env: EnvConfig, connector: TinyDBConnector) -> None:
    have = {r["rid"]: r for r in connector.resources()}
    wanted: dict[int, tuple[str, str]] = {}
    for rtype, mapping in (("gpu", env.gpu_mapping), ("node", env.node_mapping), ("aws", env.aws_mapping)):
        for rid, name in mapping.items():
            wanted[int(rid)] = (name, rtype)
    for rtype, key in (("cpu", "n_cpu"), ("passive", "n_passive"), ("ray", "n_ray")):
        try:
            count = int(env.extra.get(key, 0))
        except ValueError:
            raise ConfigError(f"{key} in {env.path} must be a whole number, got {env.extra[key]!r}") from None
        existing = sorted(rid for rid, r in have.items() if r["type"] == rtype)
        for i, rid in enumerate(existing[:count]):
            wanted[rid] = (_slot_name(rtype, i), rtype)
        top = max([*have, *wanted, 0])  # once, not per new resource: `--cpu 16000` was quadratic
        for i in range(len(existing), count):
            top += 1
            wanted[top] = (_slot_name(rtype, i), rtype)
    changed = [
        (rid, name, rtype)
        for rid, (name, rtype) in sorted(wanted.items())
        if have.get(rid) is None or have[rid]["name"] != name or have[rid]["type"] != rtype
    ]
    if changed:
        connector.add_resources(changed)  # one store write for all of them
    for rid in set(have) - set(wanted):
        if have[rid]["status"] == "free":
            connector.remove_resource(rid)


INIT_FLAGS = {
    "cpu": "--cpu 4",
    "gpu": "--gpu 0",
    "node": "--node user@host",
    "aws": "--aws user@i-…",
    "passive": "--passive",
    "ray": "--ray",
}


def require_resources(rtype: str, auppath: str, connector: TinyDBConnector) -> None:
    """Refuse to start an experiment that no registered resource could ever run.

    Resources that exist but are taken (by another live process) are fine: the experiment waits
    for them. None of the type at all would wait forever, so it is a ConfigError naming the fix:
    the `init --overwrite` that keeps what is registered and adds the missing type."""
    if connector.resources(rtype):
        return
    import shlex

    auppath = os.path.abspath(auppath)
    env_ini = os.path.join(auppath, "env.ini")
    aup = "" if auppath == os.path.abspath(".aup") else f" --aup {shlex.quote(auppath)}"
    keep = _init_flags(connector.resources()) if os.path.isfile(env_ini) else ""
    if keep is None:  # a resource no flag can say again (a multi-card gpu_mapping entry)
        raise ConfigError(
            f"no '{rtype}' resource in {env_ini} — add some there, or recreate it with "
            f"`aup-tui init{aup} --overwrite … {INIT_FLAGS.get(rtype, '--' + rtype)}`"
        )
    overwrite = " --overwrite" if os.path.isfile(env_ini) else ""
    raise ConfigError(
        f"no '{rtype}' resource in {env_ini} — add some with "
        f"`aup-tui init{aup}{overwrite}{keep} {INIT_FLAGS.get(rtype, '--' + rtype)}`"
    )


def _init_flags(resources: list[dict[str, Any]]) -> str | None:
    """The `init` flags that register `resources` again (None when one cannot be said as a flag)."""
    import shlex

    names: dict[str, list[str]] = {}
    for r in sorted(resources, key=lambda r: r["rid"]):
        names.setdefault(r["type"], []).append(str(r["name"]))
    out = ""
    if names.get("cpu"):
        out += f" --cpu {len(names['cpu'])}"
    for rtype in ("gpu", "node", "aws"):
        if names.get(rtype):
            if any("," in n or "#" in n for n in names[rtype]):
                return None
            out += f" --{rtype} {shlex.quote(','.join(names[rtype]))}"
    if names.get("passive"):
        out += " --passive"
    if names.get("ray"):
        out += " --ray"  # its address is env.ini's: give it again after --ray when not local
    return out


def gpu_mapping_warning(cards: list[str], nvml: Any = None) -> str | None:
    """One line when NVML cannot see a card that gpu_mapping names (or cannot be used at all),
    else None: such jobs start and then fail on a card that is not there, with no word why.

    `cards` are gpu_mapping's values (`"0"`, `"0,1"`, `"GPU-…"`); `nvml` the binding (default:
    pynvml, imported here and only here: `aup-tui --help` and cpu experiments never load it)."""
    from .monitors.gpu import GPUMonitor

    named: list[str] = []
    for value in cards:
        for card in str(value).split(","):
            card = card.strip()
            if card and card not in named:
                named.append(card)
    if not named:
        return None
    monitor = GPUMonitor(nvml=nvml, history=1)
    try:
        snap = monitor.sample()
    finally:
        monitor.close()
    shown = ",".join(named)
    if not snap.available:
        return (
            f"NVML: {snap.reason} — cannot check the cards gpu_mapping names ({shown}); jobs on them may fail"
        )
    indices = {str(g.index) for g in snap.gpus}
    uuids = [g.uuid for g in snap.gpus if g.uuid]
    missing = [
        c
        for c in named
        if (c.isdigit() and str(int(c)) not in indices)
        or (c.startswith("GPU-") and not any(u.startswith(c) for u in uuids))
    ]
    if not missing:
        return None
    n = len(snap.gpus)
    models = ", ".join(dict.fromkeys(g.name for g in snap.gpus if g.name)) or "no name"
    return (
        f"gpu_mapping names cards {shown} but NVML sees {n} GPU{'s' if n != 1 else ''} ({models}): "
        f"jobs on card{'s' if len(missing) > 1 else ''} {','.join(missing)} will fail"
    )
