"""Nodes as env.ini names them: one reading of ``node_mapping``/``aws_mapping`` into host specs,
and one naming of a node for every place that shows it (nodes panel, job table, logs, status).

A node has three names, each for one purpose:

- its **key**, ``node <rid>`` / ``aws <rid>``: how the connection pool, the node monitor and the
  SSH/AWS managers refer to one env.ini entry (:func:`node_key`);
- its **display name**, ``host`` or ``host:port`` (the port only when it is not 22), as env.ini
  writes it (an EC2 instance's is its instance id): what a person sees (:func:`node_display_name`;
  env.ini has no alias field, so this is the whole of it);
- its **address**, ``user@host:port``: what a connection error names (:func:`host_label`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from aup_tui_backends.env_ini import EnvConfig, HostSpec, parse_host

__all__ = [
    "INSTANCE_ID",
    "EnvHost",
    "env_host_specs",
    "env_hosts",
    "host_label",
    "is_instance_id",
    "node_display_name",
    "node_key",
    "short_node_name",
    "spec_fields",
]

#: an EC2 instance id as aws_mapping may give it instead of a host
INSTANCE_ID = re.compile(r"i-[0-9a-fA-F]{8,17}")

#: env.ini's mappings of SSH hosts and the kind of node each gives
_MAPPINGS = (("node", "node_mapping"), ("aws", "aws_mapping"))


def is_instance_id(host: str) -> bool:
    """True for an EC2 instance id (``i-0123456789abcdef0``), which only the AWS manager resolves."""
    return INSTANCE_ID.fullmatch(host) is not None


def spec_fields(spec: Any) -> tuple[str | None, str, int, str | None]:
    """(user, host, port, key) of a HostSpec-like object (duck-typed)."""
    user = getattr(spec, "user", None) or None
    host = spec.host
    port = getattr(spec, "port", None) or 22
    key = getattr(spec, "key", None) or None
    return user, str(host), int(port), key


def host_label(spec: Any) -> str:
    """``user@host:port``: the address a connection error names."""
    user, host, port, _ = spec_fields(spec)
    return f"{user + '@' if user else ''}{host}:{port}"


def node_display_name(spec: Any) -> str:
    """A node's name wherever a person reads it: ``host``, or ``host:port`` when the port is not 22.

    Two nodes on one host (different ports) get different names; two entries for the same
    host and port (two job slots on one machine) are the same node and share the name."""
    _, host, port, _ = spec_fields(spec)
    return host if port == 22 else f"{host}:{port}"


def short_node_name(name: str, width: int) -> str:
    """``name`` cut to ``width`` characters for a narrow column, keeping its end (the port, which
    tells two nodes on one host apart, and an address's last digits): ``127.0.0.1:2222`` in 8
    → ``12…:2222``."""
    if len(name) <= width:
        return name
    if width <= 1:
        return "…"[:width]
    host, sep, port = name.rpartition(":")
    tail = sep + port if sep and port.isdigit() and host else ""
    keep = width - 1
    tail_len = min(max(len(tail), keep // 2), keep)
    head_len = keep - tail_len
    return name[:head_len] + "…" + name[len(name) - tail_len :]


def node_key(kind: str, rid: Any) -> str:
    """The key of resource ``rid`` of ``node_mapping`` (kind ``node``) or ``aws_mapping`` (``aws``)
    in the connection pool and the node monitor: ``node 4``."""
    return f"{kind} {rid}"


@dataclass(frozen=True)
class EnvHost:
    """One SSH host of env.ini: its resource id, the entry as written, and what it parses to."""

    kind: str  # "node" (node_mapping) or "aws" (aws_mapping)
    rid: int
    entry: str  # the env.ini value: user@host[:port] [key]
    spec: HostSpec

    @property
    def key(self) -> str:
        return node_key(self.kind, self.rid)

    @property
    def name(self) -> str:
        return node_display_name(self.spec)

    @property
    def probeable(self) -> bool:
        """False for an EC2 instance id: its address is known only once the AWS manager resolves it."""
        return not (self.kind == "aws" and is_instance_id(self.spec.host))


def env_hosts(env: EnvConfig) -> list[EnvHost]:
    """Every SSH host of env.ini (``node_mapping``, then ``aws_mapping``), in the file's order.

    The one reading of those mappings: the node monitor, ``resources --probe`` and the managers'
    names all come from it. ``load_env`` has checked every entry already."""
    return [
        EnvHost(kind=kind, rid=int(rid), entry=value, spec=parse_host(value))
        for kind, attr in _MAPPINGS
        for rid, value in getattr(env, attr).items()
    ]


def env_host_specs(env: EnvConfig) -> dict[str, HostSpec]:
    """key (``node 4``) → HostSpec of every host of env.ini that can be probed as it stands (an
    EC2 instance id is left out: only the AWS manager resolves it)."""
    return {host.key: host.spec for host in env_hosts(env) if host.probeable}
