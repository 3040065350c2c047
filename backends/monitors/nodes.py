"""SSH nodes: a pool of persistent connections, and a health monitor on it.

:class:`NodePool` keeps one paramiko connection per node (reused, with
keepalive), checks host keys against the user's known_hosts, and is shared:
the SSH resource manager borrows its connections (``get_client``,
``get_transport``, ``open_channel``, ``run``) and asks it ``is_down(name)``.

:class:`NodeMonitor` probes every node concurrently — reachability, the round
trip of a no-op command, load, memory and GPUs (``nvidia-smi`` when present) in
one remote command — and keeps each node's state (UP / SLOW / DOWN) with the
last error, since when, and a short history of state changes.  A DOWN node is
retried with capped exponential backoff and comes back by itself.

paramiko is imported lazily (inside functions) so importing this module is
cheap.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from enum import Enum
from typing import TYPE_CHECKING, Any

from aup_tui_backends.errors import AupError
from aup_tui_backends.monitors.gpu import GPUStatus

if TYPE_CHECKING:  # pragma: no cover
    import paramiko

log = logging.getLogger(__name__)

__all__ = [
    "CommandTimeoutError",
    "HostKeyChangedError",
    "NodeAuthError",
    "NodeError",
    "NodeMonitor",
    "NodePool",
    "NodeState",
    "NodeStatus",
    "NodeUnreachableError",
    "StateChange",
    "UnknownHostKeyError",
    "PROBE_SCRIPT",
    "probe_script",
    "host_label",
    "parse_probe_output",
]

DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"

NVIDIA_SMI_QUERY = (
    "nvidia-smi --query-gpu=index,name,utilization.gpu,memory.used,memory.total,"
    "temperature.gpu,power.draw --format=csv,noheader,nounits"
)


def probe_script(smi_timeout: float = 10.0) -> str:
    """The one remote command of a probe (run with ``sh -c``, whatever the login shell).

    Shell builtins only, except nvidia-smi (bounded by ``timeout`` where the
    node has it: a wedged GPU can hang nvidia-smi) and uptime where there is
    no /proc.
    """
    limit = max(1, int(smi_timeout))
    return (
        'if [ -r /proc/loadavg ]; then read -r l < /proc/loadavg; echo "$l"; else uptime; fi; '
        "echo @@mem; "
        "if [ -r /proc/meminfo ]; then while read -r k v u; do case $k in "
        'MemTotal:|MemAvailable:) echo "$k $v $u";; esac; done < /proc/meminfo; fi; '
        "echo @@gpu; "
        "if command -v nvidia-smi >/dev/null 2>&1; then "
        f"if command -v timeout >/dev/null 2>&1; then timeout {limit} {NVIDIA_SMI_QUERY} 2>&1; "
        f'else {NVIDIA_SMI_QUERY} 2>&1; fi; echo "@@rc $?"; '
        "else echo @@nosmi; fi"
    )


PROBE_SCRIPT = probe_script()


# --------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------
class NodeError(AupError):
    """A node cannot be used; the message is one sentence naming the host."""

    def __init__(self, message: str, node: str | None = None):
        super().__init__(message)
        self.node = node


class NodeUnreachableError(NodeError):
    """No connection (refused, timed out, unresolvable, dropped)."""


class HostKeyChangedError(NodeError):
    """The host presented a key different from the one in known_hosts."""


class UnknownHostKeyError(NodeError):
    """The host is not in known_hosts and new host keys are not accepted."""


class NodeAuthError(NodeError):
    """The host refused our user/key."""


class CommandTimeoutError(NodeError):
    """A remote command did not finish within its timeout."""


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def _spec_fields(spec: Any) -> tuple[str | None, str, int, str | None]:
    """(user, host, port, key) of a HostSpec-like object (duck-typed)."""
    user = getattr(spec, "user", None) or None
    host = spec.host
    port = getattr(spec, "port", None) or 22
    key = getattr(spec, "key", None) or None
    return user, str(host), int(port), key


def host_label(spec: Any) -> str:
    """``user@host:port`` for messages."""
    user, host, port, _ = _spec_fields(spec)
    return f"{user + '@' if user else ''}{host}:{port}"


def _known_hosts_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def _show_path(path: str) -> str:
    """``path`` with the home directory written as ``~``."""
    home = os.path.expanduser("~")
    if home and home != "/" and (path == home or path.startswith(home + os.sep)):
        return "~" + path[len(home) :]
    return path


_known_hosts_write_lock = threading.Lock()


class _RejectUnknownHost:
    """paramiko missing-host-key policy: refuse, with a clear message."""

    def __init__(self, known_hosts: str, node: str):
        self.known_hosts = known_hosts
        self.node = node

    def missing_host_key(self, client, hostname, key):
        host, port = _split_known_name(hostname)
        kh = _show_path(self.known_hosts)
        keyscan = f"ssh-keyscan -p {port} {host}" if port != 22 else f"ssh-keyscan {host}"
        raise UnknownHostKeyError(
            f"host key for {host}:{port} is unknown (not in {kh}) — check it with "
            f"`{keyscan}` and add it to {kh}, or accept new host keys with `--accept-new-hosts` "
            '(aup-tui resources --probe) or "accept_new_hosts": true in resource_args',
            self.node,
        )


class _AcceptNewHost:
    """paramiko missing-host-key policy: accept a new host and append its key.

    Only the new line is appended (as OpenSSH does); the user's known_hosts is
    never rewritten, so entries paramiko cannot parse are kept.  A *changed*
    key is still refused (paramiko raises BadHostKeyException before this).
    """

    def __init__(self, known_hosts: str, node: str):
        self.known_hosts = known_hosts
        self.node = node

    def missing_host_key(self, client, hostname, key):
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


def _split_known_name(name: str) -> tuple[str, int]:
    m = re.fullmatch(r"\[(.*)\]:(\d+)", name)
    if m:
        return m.group(1), int(m.group(2))
    return name, 22


class _Conn:
    __slots__ = ("spec", "lock", "client", "connects", "down", "error")

    def __init__(self, spec: Any):
        self.spec = spec
        self.lock = threading.Lock()
        self.client: paramiko.SSHClient | None = None
        self.connects = 0
        self.down = False
        self.error = ""


# --------------------------------------------------------------------------
# the pool
# --------------------------------------------------------------------------
class NodePool:
    """One persistent SSH connection per node, shared and thread-safe.

    ``nodes`` maps a node name (the resource id) to a HostSpec-like object
    with ``user``, ``host``, ``port`` and ``key``.  Host keys are checked
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
    def add_node(self, name: str, spec: Any) -> None:
        """Register (or re-point) a node; a changed spec drops its connection."""
        name = str(name)
        with self._lock:
            conn = self._conns.get(name)
            if conn is not None and _spec_fields(conn.spec) == _spec_fields(spec):
                return
            self._conns[name] = _Conn(spec)
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
        return host_label(self._conn(name).spec)

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
                _quiet_close(client)
            try:
                client = self._connect(str(name), conn.spec)
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

    def __exit__(self, *exc) -> None:
        self.close()

    @staticmethod
    def _close_conn(conn: _Conn) -> None:
        client, conn.client = conn.client, None
        if client is not None:
            _quiet_close(client)

    def _lost(self, name: str, exc: BaseException) -> NodeUnreachableError:
        """The connection broke: drop it, mark the node down; the error to raise."""
        label = self.label(name)
        self.disconnect(name)
        message = f"lost the connection to {label}: {describe_error(exc)}"
        self.mark_down(name, message)
        return NodeUnreachableError(message, str(name))

    def _connect(self, name: str, spec: Any) -> paramiko.SSHClient:
        import socket

        import paramiko

        user, host, port, key = _spec_fields(spec)
        label = host_label(spec)
        if key:
            key = os.path.expanduser(key)
            if not os.path.isfile(key):
                raise NodeAuthError(
                    f"the private key {key} for {label} does not exist — fix the key path in env.ini",
                    name,
                )
        _quiet_paramiko()
        client = paramiko.SSHClient()
        if os.path.exists(self.known_hosts):
            try:
                client.get_host_keys().load(self.known_hosts)
            except (OSError, UnicodeDecodeError) as exc:
                raise NodeError(f"cannot read {_show_path(self.known_hosts)}: {exc}", name) from None
        policy = _AcceptNewHost if self.accept_new_hosts else _RejectUnknownHost
        client.set_missing_host_key_policy(policy(self.known_hosts, name))
        timeout = self.connect_timeout
        try:
            client.connect(
                host,
                port=port,
                username=user,
                key_filename=key,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
                channel_timeout=timeout,
                allow_agent=key is None,
                look_for_keys=key is None,
            )
        except NodeError:
            _quiet_close(client)
            raise
        except paramiko.BadHostKeyException:
            _quiet_close(client)
            kh = _show_path(self.known_hosts)
            raise HostKeyChangedError(
                f"host key for {host}:{port} changed — remove the old key from {kh} if this is "
                f"expected (ssh-keygen -R '{_known_hosts_name(host, port)}' -f {kh})",
                name,
            ) from None
        except paramiko.AuthenticationException as exc:
            _quiet_close(client)
            raise NodeAuthError(
                f"authentication failed for {label}"
                + (f" with key {key}" if key else "")
                + f" ({describe_error(exc)}) — check the user and key in env.ini",
                name,
            ) from None
        except socket.gaierror as exc:
            _quiet_close(client)
            raise NodeUnreachableError(
                f"cannot resolve host {host!r} ({exc.strerror or exc})", name
            ) from None
        except TimeoutError:
            _quiet_close(client)
            raise NodeUnreachableError(
                f"cannot connect to {label}: timed out after {timeout:g} s", name
            ) from None
        except paramiko.ssh_exception.NoValidConnectionsError as exc:
            _quiet_close(client)
            reason = "connection refused" if _all_refused(exc) else describe_error(exc)
            raise NodeUnreachableError(f"cannot connect to {label}: {reason}", name) from None
        except Exception as exc:  # SSHException, EOFError, OSError, …
            transport = client.get_transport()
            cause = getattr(transport, "saved_exception", None) or exc  # what killed the handshake
            _quiet_close(client)
            not_ssh = _not_ssh_reason(cause, timeout) or _not_ssh_reason(exc, timeout)
            if not not_ssh and "No existing session" in str(exc) and transport is not None:
                # paramiko gave up waiting for the handshake and tried to log in anyway
                if not getattr(transport, "remote_version", ""):
                    not_ssh = f"no SSH greeting within {timeout:g} s"
                else:
                    cause = TimeoutError(f"the SSH handshake did not finish within {timeout:g} s")
            if not_ssh:
                raise NodeUnreachableError(
                    f"cannot connect to {label}: {not_ssh} (is it an SSH server? check the host and port "
                    "in env.ini)",
                    name,
                ) from None
            raise NodeUnreachableError(f"cannot connect to {label}: {describe_error(cause)}", name) from None
        transport = client.get_transport()
        if transport is not None:
            if self.keepalive > 0:
                transport.set_keepalive(max(1, int(self.keepalive)))
            try:  # small request/reply packets: no Nagle delay (paramiko leaves it on)
                transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except (OSError, AttributeError):
                pass
        return client

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


def exec_within(
    chan: Any, command: str, timeout: float, label: str = "the node", subsystem: bool = False
) -> None:
    """``chan.exec_command(command)`` (``chan.invoke_subsystem(command)`` with ``subsystem``),
    giving up after ``timeout`` s: paramiko waits for the server's answer to the request without
    a deadline, so a wedged channel would hang its caller forever. At the deadline the channel
    is closed and :class:`CommandTimeoutError` raised (a retry is the caller's business)."""
    fired = threading.Event()
    what = f"to start its {command} subsystem" if subsystem else "to run a command"

    def give_up() -> None:
        fired.set()
        try:
            chan.close()
        except Exception:
            pass

    timer = threading.Timer(timeout, give_up)
    timer.daemon = True
    timer.start()
    try:
        (chan.invoke_subsystem if subsystem else chan.exec_command)(command)
    except Exception:
        if fired.is_set():
            raise CommandTimeoutError(
                f"{label} did not answer a request {what} within {timeout:g} s", label
            ) from None
        raise
    finally:
        timer.cancel()
    if fired.is_set():  # answered just as the deadline closed the channel
        raise CommandTimeoutError(f"{label} did not answer a request {what} within {timeout:g} s", label)


_paramiko_quieted = False


def _quiet_paramiko() -> None:
    """paramiko logs a traceback (at ERROR, through its transport thread) for every failed
    handshake; with no logging set up, Python prints that on stderr. We turn each failure into
    one clear message instead: give paramiko's logger a handler so nothing reaches stderr by
    default (logging configured by the application still receives the records)."""
    global _paramiko_quieted
    if not _paramiko_quieted:
        logging.getLogger("paramiko").addHandler(logging.NullHandler())
        _paramiko_quieted = True


def _not_ssh_reason(exc: BaseException, timeout: float) -> str:
    """Why the peer is not (or does not act like) an SSH server, or "" when the error says
    nothing of the sort (a plain TCP listener on the port, a web server, a closed socket)."""
    text = str(exc)
    if "protocol banner" in text:
        context = exc.__context__ or exc.__cause__
        lowered = text.lower()
        if isinstance(context, (TimeoutError,)) or "timed out" in lowered or "timeout" in lowered:
            return f"no SSH greeting within {timeout:g} s"
        return "it closed the connection without an SSH greeting"
    if "Indecipherable protocol version" in text or "Incompatible version" in text:
        return f"it does not speak SSH 2 ({describe_error(exc)})"
    return ""


def _quiet_close(client: Any) -> None:
    try:
        client.close()
    except Exception:
        pass


def _all_refused(exc: Any) -> bool:
    import errno

    errors = getattr(exc, "errors", {}) or {}
    return bool(errors) and all(getattr(e, "errno", None) == errno.ECONNREFUSED for e in errors.values())


def describe_error(exc: BaseException) -> str:
    """One line for a connection error (an empty EOFError reads 'the connection closed')."""
    text = " ".join(str(exc).split())  # one line
    if isinstance(exc, EOFError) and not text:
        return "the connection closed"
    return text or type(exc).__name__


# --------------------------------------------------------------------------
# statuses
# --------------------------------------------------------------------------
class NodeState(str, Enum):
    UNKNOWN = "UNKNOWN"  # not probed yet
    UP = "UP"
    SLOW = "SLOW"  # reachable, round trip over slow_rtt
    DOWN = "DOWN"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class StateChange:
    at: float  # monitor clock
    state: NodeState
    reason: str = ""


@dataclass(frozen=True)
class NodeStatus:
    """One node's health.  Times are from the monitor's clock; memory in bytes.

    ``error`` is the current error (only while DOWN), ``last_error`` the most
    recent one even after recovery.  ``output`` is the raw output of the last
    probe command, for a node-detail view.
    """

    name: str
    host: str  # user@host:port
    state: NodeState = NodeState.UNKNOWN
    since: float = 0.0  # time of the last state change
    checked: float | None = None  # time of the last finished probe
    rtt: float | None = None  # seconds, round trip of a no-op command
    load: tuple[float, float, float] | None = None
    mem_total: int | None = None
    mem_available: int | None = None
    jobs: int = 0
    gpus: tuple[GPUStatus, ...] = ()
    gpu_error: str = ""  # nvidia-smi present but failing
    error: str = ""
    last_error: str = ""
    failures: int = 0  # consecutive failed probes
    next_probe: float | None = None
    history: tuple[StateChange, ...] = ()
    output: str = ""

    @property
    def is_down(self) -> bool:
        return self.state is NodeState.DOWN

    @property
    def mem_used(self) -> int | None:
        if self.mem_total is None or self.mem_available is None:
            return None
        return self.mem_total - self.mem_available


@dataclass(frozen=True)
class ProbeResult:
    """What one probe of one node found (parsed from :data:`PROBE_SCRIPT`)."""

    load: tuple[float, float, float] | None = None
    mem_total: int | None = None
    mem_available: int | None = None
    gpus: tuple[GPUStatus, ...] = ()
    gpu_error: str = ""


_LOAD_RE = re.compile(r"load averages?:\s*([\d.]+),?\s+([\d.]+),?\s+([\d.]+)")


def _num(text: str) -> float | None:
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        return None  # "[N/A]", "[Not Supported]", …


def parse_probe_output(output: str) -> ProbeResult:
    """Parse the output of :data:`PROBE_SCRIPT`."""
    head, _, rest = output.partition("@@mem")
    mem_part, _, gpu_part = rest.partition("@@gpu")

    load = None
    first = head.strip().splitlines()[0] if head.strip() else ""
    parts = first.split()
    if len(parts) >= 3 and all(_num(p) is not None for p in parts[:3]):
        load = (float(parts[0]), float(parts[1]), float(parts[2]))
    else:
        m = _LOAD_RE.search(head)
        if m:
            load = (float(m.group(1)), float(m.group(2)), float(m.group(3)))

    mem: dict[str, int] = {}
    for line in mem_part.splitlines():
        key, _, value = line.partition(":")
        fields = value.split()
        if fields and fields[0].isdigit():
            factor = 1024 if len(fields) > 1 and fields[1].lower() == "kb" else 1
            mem[key.strip()] = int(fields[0]) * factor

    gpus: list[GPUStatus] = []
    gpu_error = ""
    lines = [line.strip() for line in gpu_part.strip().splitlines() if line.strip()]
    if lines and lines[-1].startswith("@@rc"):
        rc = lines[-1].split()[-1]
        body = lines[:-1]
        if rc == "124" and not body:
            gpu_error = "nvidia-smi did not answer in time"
        elif rc != "0":
            gpu_error = next((ln for ln in body), f"nvidia-smi exited with status {rc}")
        else:
            for line in body:
                fields = [f.strip() for f in line.split(",")]
                if len(fields) < 7:
                    continue
                # the name may itself contain commas: take fields from both ends
                index = _num(fields[0])
                if index is None:
                    continue
                util, used, total, temp, power = (_num(f) for f in fields[-5:])
                gpus.append(
                    GPUStatus(
                        index=int(index),
                        name=", ".join(fields[1:-5]),
                        utilization=util,
                        memory_used=None if used is None else int(used * 1024 * 1024),
                        memory_total=None if total is None else int(total * 1024 * 1024),
                        temperature=temp,
                        power_draw=power,
                    )
                )
    return ProbeResult(
        load=load,
        mem_total=mem.get("MemTotal"),
        mem_available=mem.get("MemAvailable"),
        gpus=tuple(gpus),
        gpu_error=gpu_error,
    )


# --------------------------------------------------------------------------
# the monitor
# --------------------------------------------------------------------------
class _Node:
    __slots__ = (
        "name",
        "state",
        "since",
        "checked",
        "error",
        "last_error",
        "failures",
        "next_due",
        "history",
        "gpu_history",
        "in_flight",
        "token",
        "status",
        "started",
    )

    def __init__(self, name: str, now: float, history: int):
        self.name = name
        self.state = NodeState.UNKNOWN
        self.since = now
        self.checked: float | None = None
        self.error = ""
        self.last_error = ""
        self.failures = 0
        self.next_due = now
        self.history: deque[StateChange] = deque(maxlen=history)
        self.gpu_history: dict[int, deque[float]] = {}
        self.in_flight = False
        self.token = 0
        self.status: NodeStatus | None = None
        self.started: float | None = None  # time.monotonic() when the running probe began


class NodeMonitor:
    """Probes every node of a :class:`NodePool`, concurrently.

    ``nodes`` (name → HostSpec) are added to the pool; by default the
    monitor watches every node the pool has.  ``probe_once()`` probes all
    nodes now and returns their statuses; ``start(callback)`` probes on a
    background thread — each node every ``interval`` seconds after its
    previous probe finished, a DOWN node after a backoff doubling from
    ``interval`` up to ``max_backoff`` — and calls ``callback(statuses)``
    (name → :class:`NodeStatus`) after each round, from that thread.
    """

    def __init__(
        self,
        pool: NodePool,
        nodes: Mapping[str, Any] | None = None,
        interval: float = 5.0,
        slow_rtt: float = 0.5,
        max_backoff: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        *,
        history: int = 50,
        gpu_history: int = 60,
        probe_timeout: float | None = None,
    ):
        self.pool = pool
        for name, spec in (nodes or {}).items():
            pool.add_node(name, spec)
        self.interval = float(interval)
        self.slow_rtt = float(slow_rtt)
        self.max_backoff = float(max_backoff)
        self.clock = clock
        self.history_len = int(history)
        self.gpu_history_len = int(gpu_history)
        self._probe_timeout = probe_timeout
        self._lock = threading.Lock()
        self._nodes: dict[str, _Node] = {}
        self._job_counts: dict[str, int] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._dirty = False
        self._thread: threading.Thread | None = None
        self._sync_nodes()

    @property
    def probe_timeout(self) -> float:
        """How long one node's probe may take before it counts as DOWN."""
        if self._probe_timeout is not None:
            return float(self._probe_timeout)
        return self.pool.connect_timeout + 2 * self.pool.command_timeout + 1.0

    def _sync_nodes(self) -> None:
        names = list(self.pool.nodes())
        now = self.clock()
        with self._lock:
            for name in names:
                if name not in self._nodes:
                    self._nodes[name] = _Node(name, now, self.history_len)
            for name in list(self._nodes):
                if name not in names:
                    del self._nodes[name]

    # -- the manager's side -------------------------------------------------------
    def set_job_counts(self, counts: Mapping[str, int]) -> None:
        """How many of our jobs run on each node now (name → count); a change is reported at
        once, not with the next probe."""
        new = {str(k): int(v) for k, v in counts.items() if v}
        if new != self._job_counts:
            self._job_counts = new
            self._dirty = True
            self._wake.set()

    def is_down(self, name: str) -> bool:
        node = self._nodes.get(str(name))
        if node is not None and node.state is NodeState.DOWN:
            return True
        return self.pool.is_down(name)

    def status(self, name: str) -> NodeStatus:
        return self.statuses()[str(name)]

    def statuses(self) -> dict[str, NodeStatus]:
        """The latest status of every node (name → NodeStatus)."""
        self._sync_nodes()
        counts = self._job_counts
        with self._lock:
            result = {}
            for name, node in self._nodes.items():
                status = node.status or self._build(node, None, None, "")
                jobs = counts.get(name, 0)
                if status.jobs != jobs:
                    status = replace(status, jobs=jobs)
                result[name] = status
            return result

    # -- probing ------------------------------------------------------------------
    def probe_once(self, names: Iterable[str] | None = None) -> dict[str, NodeStatus]:
        """Probe the nodes (all by default) now, concurrently; return all statuses.

        Bounded: a node that has not answered within ``probe_timeout`` is
        reported DOWN.
        """
        self._sync_nodes()
        wanted = list(self._nodes) if names is None else [str(n) for n in names]
        self._probe_many(wanted)
        return self.statuses()

    def _launch(self, names: Iterable[str]) -> list[tuple[str, int, threading.Thread]]:
        """Start a probe thread for each named node that has none running."""
        threads: list[tuple[str, int, threading.Thread]] = []
        with self._lock:
            for name in names:
                node = self._nodes.get(name)
                if node is None or node.in_flight:
                    continue
                node.in_flight = True
                node.started = time.monotonic()
                node.token += 1
                thread = threading.Thread(
                    target=self._probe_node,
                    args=(name, node.token),
                    name=f"aup-probe-{name}",
                    daemon=True,
                )
                threads.append((name, node.token, thread))
        for _, _, thread in threads:
            thread.start()
        return threads

    def _give_up(self, name: str, token: int) -> None:
        """A probe ran past ``probe_timeout``: DOWN, and unblock it."""
        message = f"no answer from {self.pool.label(name)} within {self.probe_timeout:g} s"
        self._record_failure(name, token, message, invalidate=True)
        self.pool.disconnect(name)

    def _probe_many(self, names: list[str]) -> None:
        threads = self._launch(names)
        deadline = time.monotonic() + self.probe_timeout
        for name, token, thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                self._give_up(name, token)

    def _probe_node(self, name: str, token: int) -> None:
        try:
            try:
                rtt, output = self._probe(name)
            except NodeError as exc:
                self._record_failure(name, token, str(exc))
            except Exception as exc:  # never let a probe thread die silently
                log.exception("probe of node %s failed", name)
                self._record_failure(name, token, f"probe failed: {describe_error(exc)}")
            else:
                self._record_success(name, token, rtt, output)
        finally:
            with self._lock:
                node = self._nodes.get(name)
                if node is not None:
                    node.in_flight = False
                    node.started = None
                self._dirty = True
            self._wake.set()

    def _probe(self, name: str) -> tuple[float, str]:
        pool = self.pool
        reused = pool.is_connected(name)
        pool.get_client(name)
        try:
            rtt = self._rtt(name)
        except NodeUnreachableError:
            if not reused:
                raise
            # a pooled connection that died since its last use: one fresh try
            pool.get_client(name)
            rtt = self._rtt(name)
        command = "sh -c " + shlex.quote(probe_script(pool.command_timeout / 2))
        status, out, err = pool.run(name, command)
        if status != 0 and not out:
            raise NodeError(
                f"the probe command failed on {pool.label(name)} (exit status {status}): "
                f"{err.strip().splitlines()[-1] if err.strip() else 'no output'}",
                name,
            )
        return rtt, out

    def _rtt(self, name: str) -> float:
        start = time.perf_counter()
        status, _, err = self.pool.run(name, "true")
        rtt = time.perf_counter() - start
        if status != 0:
            raise NodeError(
                f"the no-op command `true` exited with status {status} on {self.pool.label(name)}"
                + (f": {err.strip()}" if err.strip() else ""),
                name,
            )
        return rtt

    def _record_success(self, name: str, token: int, rtt: float, output: str) -> None:
        parsed = parse_probe_output(output)
        now = self.clock()
        with self._lock:
            node = self._nodes.get(name)
            if node is None or node.token != token:
                return
            state = NodeState.SLOW if rtt > self.slow_rtt else NodeState.UP
            if state is not node.state:
                reason = (
                    f"round trip {rtt * 1000:.0f} ms over {self.slow_rtt * 1000:.0f} ms"
                    if state is NodeState.SLOW
                    else f"reachable, round trip {rtt * 1000:.0f} ms"
                )
                node.history.append(StateChange(now, state, reason))
                node.state, node.since = state, now
            node.failures = 0
            node.error = ""
            node.checked = now
            node.next_due = now + self.interval
            gpus = []
            for gpu in parsed.gpus:
                hist = node.gpu_history.get(gpu.index)
                if hist is None:
                    hist = node.gpu_history[gpu.index] = deque(maxlen=self.gpu_history_len)
                if gpu.utilization is not None:
                    hist.append(gpu.utilization)
                gpus.append(replace(gpu, history=tuple(hist)))
            for index in list(node.gpu_history):
                if all(g.index != index for g in parsed.gpus):
                    del node.gpu_history[index]
            node.status = self._build(node, rtt, replace(parsed, gpus=tuple(gpus)), output)
        self.pool.mark_up(name)

    def _record_failure(self, name: str, token: int, message: str, invalidate: bool = False) -> None:
        now = self.clock()
        with self._lock:
            node = self._nodes.get(name)
            if node is None or node.token != token:
                return
            if invalidate:
                node.token += 1  # a late answer from this probe is ignored
            node.failures += 1
            # capped exponential backoff: interval, 2×, 4×, … up to max_backoff
            node.next_due = now + min(self.interval * 2 ** min(node.failures - 1, 30), self.max_backoff)
            if node.state is not NodeState.DOWN:
                node.history.append(StateChange(now, NodeState.DOWN, message))
                node.state, node.since = NodeState.DOWN, now
            node.error = node.last_error = message
            node.checked = now
            node.status = self._build(node, None, None, "")
        try:
            self.pool.mark_down(name, message)
        except NodeError:
            pass

    def _build(self, node: _Node, rtt: float | None, parsed: ProbeResult | None, output: str) -> NodeStatus:
        try:
            label = self.pool.label(node.name)
        except NodeError:
            label = node.name
        parsed = parsed or ProbeResult()
        return NodeStatus(
            name=node.name,
            host=label,
            state=node.state,
            since=node.since,
            checked=node.checked,
            rtt=rtt,
            load=parsed.load,
            mem_total=parsed.mem_total,
            mem_available=parsed.mem_available,
            jobs=self._job_counts.get(node.name, 0),
            gpus=parsed.gpus,
            gpu_error=parsed.gpu_error,
            error=node.error,
            last_error=node.last_error,
            failures=node.failures,
            next_probe=node.next_due,
            history=tuple(node.history),
            output=output,
        )

    # -- background thread ----------------------------------------------------------
    def start(self, callback: Callable[[dict[str, NodeStatus]], Any] | None = None) -> None:
        """Probe on a daemon thread; ``callback(statuses)`` after each round."""
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("NodeMonitor is already running")
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, args=(callback,), name="aup-node-monitor", daemon=True
        )
        self._thread.start()

    def _run(self, callback: Callable[[dict[str, NodeStatus]], Any] | None) -> None:
        # Each node is probed on its own schedule: a slow or dead node never
        # delays the others.  Probe threads wake this loop when they finish.
        while not self._stop.is_set():
            self._wake.clear()
            self._sync_nodes()
            now = self.clock()
            mono = time.monotonic()
            limit = self.probe_timeout
            with self._lock:
                due = [n.name for n in self._nodes.values() if not n.in_flight and n.next_due <= now]
                hung = [
                    (n.name, n.token)
                    for n in self._nodes.values()
                    if n.in_flight and n.started is not None and mono - n.started > limit
                ]
                for n in self._nodes.values():
                    if n.in_flight and (n.name, n.token) in hung:
                        n.started = None  # reported once
            for name, token in hung:
                self._give_up(name, token)
            self._launch(due)
            if self._dirty or hung:
                self._dirty = False
                if callback is not None:
                    try:
                        callback(self.statuses())
                    except Exception:
                        log.exception("node monitor callback failed")
            now = self.clock()
            mono = time.monotonic()
            with self._lock:
                waits = [n.next_due - now for n in self._nodes.values() if not n.in_flight]
                waits += [
                    n.started + limit - mono
                    for n in self._nodes.values()
                    if n.in_flight and n.started is not None
                ]
            wait = min(waits) if waits else self.interval
            self._wake.wait(min(max(wait, 0.01), self.interval))

    def retry(self, name: str | None = None) -> None:
        """Probe a node (every node by default) at the next round, ignoring backoff."""
        now = self.clock()
        with self._lock:
            for node in self._nodes.values():
                if name is None or node.name == str(name):
                    node.next_due = now
        self._wake.set()

    def stop(self, timeout: float | None = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
