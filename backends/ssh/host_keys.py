"""Host-key policy: a node's key is checked against the user's known_hosts; an unknown host is
refused (with the command that checks its key) unless new hosts are accepted, and then only its
new line is appended. A changed key is always refused (paramiko raises before the policy)."""

from __future__ import annotations

import logging
import os
import re
import threading
from typing import Any

from .errors import UnknownHostKeyError

__all__ = [
    "DEFAULT_KNOWN_HOSTS",
    "AcceptNewHost",
    "RejectUnknownHost",
    "known_hosts_name",
    "show_path",
    "split_known_name",
]

log = logging.getLogger(__name__)

DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"

_known_hosts_write_lock = threading.Lock()


def known_hosts_name(host: str, port: int) -> str:
    """How known_hosts writes a host: ``host``, or ``[host]:port`` off port 22."""
    return host if port == 22 else f"[{host}]:{port}"


def split_known_name(name: str) -> tuple[str, int]:
    """(host, port) of a known_hosts name."""
    m = re.fullmatch(r"\[(.*)\]:(\d+)", name)
    if m:
        return m.group(1), int(m.group(2))
    return name, 22


def show_path(path: str) -> str:
    """``path`` with the home directory written as ``~``."""
    home = os.path.expanduser("~")
    if home and home != "/" and (path == home or path.startswith(home + os.sep)):
        return "~" + path[len(home) :]
    return path


class RejectUnknownHost:
    """paramiko missing-host-key policy: refuse, with a clear message."""

    def __init__(self, known_hosts: str, node: str):
        self.known_hosts = known_hosts
        self.node = node

    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        host, port = split_known_name(hostname)
        kh = show_path(self.known_hosts)
        keyscan = f"ssh-keyscan -p {port} {host}" if port != 22 else f"ssh-keyscan {host}"
        raise UnknownHostKeyError(
            f"host key for {host}:{port} is unknown (not in {kh}) — check it with "
            f"`{keyscan}` and add it to {kh}, or accept new host keys with `--accept-new-hosts` "
            '(aup-tui resources --probe) or "accept_new_hosts": true in resource_args',
            self.node,
        )


class AcceptNewHost:
    """paramiko missing-host-key policy: accept a new host and append its key.

    Only the new line is appended (as OpenSSH does); the user's known_hosts is
    never rewritten, so entries paramiko cannot parse are kept.
    """

    def __init__(self, known_hosts: str, node: str):
        self.known_hosts = known_hosts
        self.node = node

    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        client.get_host_keys().add(hostname, key.get_name(), key)
        line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
        try:
            with _known_hosts_write_lock:
                directory = os.path.dirname(self.known_hosts)
                if directory and not os.path.isdir(directory):
                    os.makedirs(directory, mode=0o700, exist_ok=True)
                needs_newline = False
                if os.path.exists(self.known_hosts) and os.path.getsize(self.known_hosts):
                    with open(self.known_hosts, "rb") as f:
                        f.seek(-1, os.SEEK_END)
                        needs_newline = f.read(1) != b"\n"
                fd = os.open(self.known_hosts, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                with os.fdopen(fd, "a") as f:
                    f.write(("\n" if needs_newline else "") + line)
        except OSError as exc:
            log.warning(
                "accepted the host key of %s but could not save it to %s: %s", hostname, self.known_hosts, exc
            )
        else:
            log.info("added the host key of %s to %s", hostname, self.known_hosts)
