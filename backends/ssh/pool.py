"""One persistent SSH connection per node, shared by the SSH/AWS managers and the node monitor.

:class:`NodePool` keeps one paramiko connection per node (reused, with keepalive), checks host
keys against the user's known_hosts (:mod:`.host_keys`), runs commands with deadlines and knows
which nodes are down. paramiko is imported lazily (inside functions), so importing this module
is cheap.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .commands import exec_within
from .connect import connect, quiet_close
from .errors import CommandTimeoutError, NodeError, NodeUnreachableError, describe_error
from .host_keys import DEFAULT_KNOWN_HOSTS
from .hosts import host_label, node_display_name, spec_fields

if TYPE_CHECKING:  # pragma: no cover
    import paramiko

__all__ = ["NodePool"]


class _Conn:
    """One node's connection and what is known of it."""

    __slots__ = ("spec", "display_name", "lock", "client", "connects", "down", "error")

    def __init__(self, spec: Any, display_name: str):
        self.spec = spec
        self.display_name = display_name
        self.lock = threading.Lock()
        self.client: paramiko.SSHClient | None = None
        self.connects = 0
        self.down = False
        self.error = ""


class NodePool:
    """One persistent SSH connection per node, shared and thread-safe.

    ``nodes`` maps a node's key (``node 4``: :func:`~.hosts.node_key`) to a
    HostSpec-like object with ``user``, ``host``, ``port`` and ``key``.  Host keys are checked
    against ``known_hosts`` (default ``~/.ssh/known_hosts``); unknown hosts
    are refused unless ``accept_new_hosts=True``, which accepts and saves
    them.  A changed host key is always refused.
    """

    def __init__(
        self,
        nodes: Mapping[str, Any] | None = None,
        *,
        known_hosts: str | None = None,
        accept_new_hosts: bool = False,
        connect_timeout: float = 10.0,
        command_timeout: float = 30.0,
        keepalive: float = 15.0,
    ):
        self.known_hosts = os.path.abspath(os.path.expanduser(known_hosts or DEFAULT_KNOWN_HOSTS))
        self.accept_new_hosts = bool(accept_new_hosts)
        self.connect_timeout = float(connect_timeout)
        self.command_timeout = float(command_timeout)
        self.keepalive = float(keepalive)
        self._lock = threading.Lock()
        self._conns: dict[str, _Conn] = {}
        for name, spec in (nodes or {}).items():
            self.add_node(name, spec)

    # -- nodes ------------------------------------------------------------------
    def add_node(self, name: str, spec: Any, display_name: str | None = None) -> None:
        """Register (or re-point) a node; a changed spec drops its connection.

        ``display_name`` is what a person reads (default :func:`~.hosts.node_display_name` of
        ``spec``; an EC2 instance's is its id, not the address it resolved to)."""
        name = str(name)
        with self._lock:
            conn = self._conns.get(name)
            if conn is not None and spec_fields(conn.spec) == spec_fields(spec):
                if display_name:
                    conn.display_name = display_name
                return
            self._conns[name] = _Conn(spec, display_name or node_display_name(spec))
        if conn is not None:
            self._close_conn(conn)

    def remove_node(self, name: str) -> None:
        with self._lock:
            conn = self._conns.pop(str(name), None)
        if conn is not None:
            self._close_conn(conn)

    def nodes(self) -> dict[str, Any]:
        """name → spec of every registered node."""
        with self._lock:
            return {n: c.spec for n, c in self._conns.items()}

    def spec(self, name: str) -> Any:
        return self._conn(name).spec

    def label(self, name: str) -> str:
        """The node's address, ``user@host:port``, as connection errors name it."""
        return host_label(self._conn(name).spec)

    def display_name(self, name: str) -> str:
        """The node's name as a person reads it (``host[:port]``)."""
        return self._conn(name).display_name

    def _conn(self, name: str) -> _Conn:
        try:
            return self._conns[str(name)]
        except KeyError:
            raise NodeError(
                f"unknown node {name!r}: it is not in node_mapping or aws_mapping", str(name)
            ) from None

    # -- state ------------------------------------------------------------------
    def is_down(self, name: str) -> bool:
        """True when the last connect or command on ``name`` failed."""
        return self._conn(name).down

    def last_error(self, name: str) -> str:
        return self._conn(name).error

    def mark_down(self, name: str, error: str) -> None:
        conn = self._conn(name)
        conn.down, conn.error = True, error

    def mark_up(self, name: str) -> None:
        conn = self._conn(name)
        conn.down, conn.error = False, ""

    def is_connected(self, name: str) -> bool:
        client = self._conn(name).client
        if client is None:
            return False
        transport = client.get_transport()
        return transport is not None and transport.is_active()

    def connect_count(self, name: str) -> int:
        """How many connections were opened to ``name`` (1 while reused)."""
        return self._conn(name).connects

    # -- connections --------------------------------------------------------------
    def get_client(self, name: str) -> paramiko.SSHClient:
        """The node's connected SSHClient (connects, or reconnects, if needed).

        Raises a :class:`NodeError` subclass with a one-line message.
        """
        conn = self._conn(name)
        with conn.lock:
            client = conn.client
            if client is not None:
                transport = client.get_transport()
                if transport is not None and transport.is_active():
                    return client
                conn.client = None
                quiet_close(client)
            try:
                client = connect(
                    str(name),
                    conn.spec,
                    known_hosts=self.known_hosts,
                    accept_new_hosts=self.accept_new_hosts,
                    connect_timeout=self.connect_timeout,
                    keepalive=self.keepalive,
                )
            except NodeError as exc:
                conn.down, conn.error = True, str(exc)
                raise
            conn.client = client
            conn.connects += 1
            conn.down, conn.error = False, ""
            return client

    def get_transport(self, name: str) -> paramiko.Transport:
        return self.get_client(name).get_transport()

    def open_channel(self, name: str, timeout: float | None = None) -> paramiko.Channel:
        """A new session channel on the node's pooled connection (caller closes it).

        The node may refuse a channel while the connection is fine (OpenSSH
        allows ``MaxSessions``, 10 by default, at once per connection): that
        raises a :class:`NodeError` and keeps the connection; a dead
        connection raises :class:`NodeUnreachableError` and is dropped.
        """
        transport = self.get_transport(name)
        try:
            return transport.open_session(timeout=timeout or self.connect_timeout)
        except Exception as exc:
            if transport.is_active():
                raise NodeError(
                    f"{self.label(name)} refused a new session ({describe_error(exc)}) — too many at once? "
                    "(sshd's MaxSessions)",
                    str(name),
                ) from None
            raise self._lost(name, exc) from None

    def disconnect(self, name: str) -> None:
        """Close the node's connection (the next use reconnects)."""
        conn = self._conns.get(str(name))
        if conn is not None:
            self._close_conn(conn)

    def close(self) -> None:
        with self._lock:
            conns = list(self._conns.values())
        for conn in conns:
            self._close_conn(conn)

    def __enter__(self) -> NodePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _close_conn(conn: _Conn) -> None:
        client, conn.client = conn.client, None
        if client is not None:
            quiet_close(client)

    def _lost(self, name: str, exc: BaseException) -> NodeUnreachableError:
        """The connection broke: drop it, mark the node down; the error to raise."""
        label = self.label(name)
        self.disconnect(name)
        message = f"lost the connection to {label}: {describe_error(exc)}"
        self.mark_down(name, message)
        return NodeUnreachableError(message, str(name))

    # -- commands -----------------------------------------------------------------
    def run(self, name: str, command: str, timeout: float | None = None) -> tuple[int, str, str]:
        """Run ``command`` on the node over the pooled connection.

        Returns ``(exit_status, stdout, stderr)`` (exit status -1 when the
        command died of a signal).  Build ``command`` with :func:`shlex.quote`.
        Raises :class:`CommandTimeoutError` after ``timeout`` seconds (default
        ``command_timeout``), :class:`NodeUnreachableError` when the connection
        is lost.
        """
        import select

        timeout = self.command_timeout if timeout is None else float(timeout)
        deadline = time.monotonic() + timeout
        chan = self.open_channel(name, timeout=min(timeout, self.connect_timeout))
        out: list[bytes] = []
        err: list[bytes] = []
        try:
            try:
                chan.fileno()  # an OS pipe that wakes select() on data, EOF or close
                exec_within(chan, command, max(deadline - time.monotonic(), 0.1), self.label(name))
            except CommandTimeoutError:
                raise
            except Exception as exc:
                transport = chan.get_transport()
                if transport is not None and transport.is_active():
                    raise NodeError(
                        f"{self.label(name)} refused to run the command ({describe_error(exc)})", str(name)
                    ) from None
                raise self._lost(name, exc) from None
            while True:
                if chan.recv_ready():
                    out.append(chan.recv(65536))
                    continue
                if chan.recv_stderr_ready():
                    err.append(chan.recv_stderr(65536))
                    continue
                if chan.eof_received or chan.closed:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CommandTimeoutError(
                        f"command timed out after {timeout:g} s on {self.label(name)}", str(name)
                    )
                select.select([chan], [], [], remaining)
            remaining = deadline - time.monotonic()
            if not chan.status_event.wait(max(remaining, 0)):
                raise CommandTimeoutError(
                    f"command timed out after {timeout:g} s on {self.label(name)}", str(name)
                )
            transport = chan.get_transport()
            if not chan.exit_status_ready() or (
                chan.exit_status == -1 and (transport is None or not transport.is_active())
            ):
                raise self._lost(name, EOFError("the connection closed"))
            status = chan.exit_status
        finally:
            chan.close()
        return (
            status,
            b"".join(out).decode("utf-8", errors="replace"),
            b"".join(err).decode("utf-8", errors="replace"),
        )
