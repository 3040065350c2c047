"""Real OpenSSH ``sshd`` servers on 127.0.0.1 for tests (fixtures and helpers).

Each server is ``/usr/sbin/sshd -D -e -f <config>`` run as the current user on
a free port, with its own host key generated for this test session, accepting
one client key (also generated per session).  Use them from a test module::

    from sshd import sshd_factory, sshd_server, sshd_servers  # noqa: F401  (fixtures)

    def test_x(sshd_server, tmp_path):
        known_hosts = sshd_server.factory.write_known_hosts(tmp_path / "known_hosts", [sshd_server])
        spec = sshd_server.spec()            # HostSpec(user, "127.0.0.1", port, client key)
        sshd_server.kill()                   # the node "crashes": listener and sessions die
        sshd_server.start()                  # back on the same port, same host key
        sshd_server.regenerate_host_key()    # a new host key (restart to use it)

Fixtures: ``sshd_factory`` (session) starts servers (``new()``, ``start_many(n)``)
and stops them all at the end; ``sshd_server`` is a fresh server per test that
the test may kill/restart; ``sshd_servers`` is a session-wide list of
``SSHD_POOL_SIZE`` (16) servers to share — do not kill those.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import getpass
import os
import queue
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import pytest

SSHD_POOL_SIZE = 16
_INSTALL_HINT = "OpenSSH sshd is not installed — apt-get install openssh-server"


def find_sshd() -> str:
    for candidate in (shutil.which("sshd"), "/usr/sbin/sshd", "/usr/local/sbin/sshd"):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return os.path.abspath(candidate)  # sshd re-execs itself: needs an absolute path
    pytest.fail(_INSTALL_HINT, pytrace=False)


@functools.cache
def _server_ports() -> tuple[int, ...]:
    """Ports 10000-65535 outside the range the kernel draws clients' local ports (and
    ``bind(0)``) from (read once)."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return tuple(p for p in range(10000, 65536) if not low <= p <= high)


_given_ports: set[int] = set()
_ports_lock = threading.Lock()


def free_port() -> int:
    """A loopback port nothing listens on, that nothing else in this process is handed.

    Taken from outside the kernel's ephemeral range: a port from ``bind(0)`` is
    free only until the socket closes, and every outgoing connection (ssh, HTTP,
    the probes) draws its local port from that same range, so by the time sshd
    or moto binds it, a client may hold it ("Address already in use").
    """
    pool = _server_ports()
    rng = random.Random()
    with _ports_lock:
        for _ in range(1000):
            port = rng.choice(pool)
            if port in _given_ports:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _given_ports.add(port)
            return port
    raise RuntimeError("no free loopback port outside the ephemeral range after 1000 tries")


def keygen(path: Path, kind: str = "ed25519") -> Path:
    """A new key pair at ``path`` (private) and ``path.pub``."""
    for p in (path, Path(str(path) + ".pub")):
        if p.exists():
            p.unlink()
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "aup-tui-test", "-f", str(path)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    return path


# --- sshd must not outlive the test process, even one killed with SIGKILL -----
# Each sshd gets PR_SET_PDEATHSIG: the kernel kills it when the thread that
# started it ends.  So every sshd is started by one long-lived launcher thread,
# which ends only with the process.
_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_prctl = _libc.prctl
_launch_queue: queue.Queue = queue.Queue()
_launcher_lock = threading.Lock()
_launcher: threading.Thread | None = None


def _die_with_parent() -> None:  # runs in the child, between fork and exec
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _launcher_loop() -> None:
    while True:
        args, kwargs, box, done = _launch_queue.get()
        try:
            box.append(subprocess.Popen(args, preexec_fn=_die_with_parent, **kwargs))
        except BaseException as exc:  # handed back to the caller
            box.append(exc)
        done.set()


def _popen(args: list[str], **kwargs) -> subprocess.Popen:
    global _launcher
    with _launcher_lock:
        if _launcher is None or not _launcher.is_alive():
            _launcher = threading.Thread(target=_launcher_loop, name="sshd-launcher", daemon=True)
            _launcher.start()
    box: list = []
    done = threading.Event()
    _launch_queue.put((args, kwargs, box, done))
    done.wait()
    if isinstance(box[0], BaseException):
        raise box[0]
    return box[0]


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        ppid = int(data[data.rfind(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    return found


class SshdServer:
    """One sshd on 127.0.0.1:``port``."""

    host = "127.0.0.1"

    def __init__(
        self,
        factory: SshdFactory,
        name: str,
        extra_config: Iterable[str] = (),
        env: dict[str, str] | None = None,
    ):
        self.factory = factory
        self.name = name
        self.dir = factory.dir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.host_key = self.dir / "host_ed25519"
        self.config = self.dir / "sshd_config"
        self.log = self.dir / "sshd.log"
        self.extra_config = list(extra_config)
        self.env = dict(env or {})  # variables sshd sets for every session (SetEnv)
        self.proc: subprocess.Popen | None = None
        keygen(self.host_key)
        self._write_config()

    def _write_config(self) -> None:
        lines = [
            f"Port {self.port}",
            f"ListenAddress {self.host}",
            f"HostKey {self.host_key}",
            f"PidFile {self.dir / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.factory.authorized_keys}",
            "UsePAM no",
            "StrictModes no",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin yes",
            "MaxStartups 200",
            "MaxSessions 64",
            "LogLevel ERROR",
            "Subsystem sftp internal-sftp",
            # bash sources ~/.bashrc for commands run by sshd unless SHLVL says it is
            # nested: keep this machine's rc files (pyenv init, …) out of the tests.
            # (Only the first SetEnv line counts: every variable goes on this one.)
            "SetEnv " + " ".join(f"{k}={v}" for k, v in {"SHLVL": "1", **self.env}.items()),
            *self.extra_config,
        ]
        self.config.write_text("\n".join(lines) + "\n")

    # -- lifecycle ------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 10.0) -> SshdServer:
        """Start (or restart) on the same port; returns once the port accepts."""
        if self.running:
            return self
        self._write_config()
        with open(self.log, "ab") as log:
            self.proc = _popen(
                [self.factory.sshd, "-D", "-e", "-f", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self.wait_listening(timeout)
        return self

    def wait_listening(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"sshd on port {self.port} exited with {self.proc.returncode}: "
                    f"{self.log.read_text(errors='replace')[-2000:]}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError as err:
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(f"sshd on port {self.port} did not listen within {timeout} s") from err
                time.sleep(0.01)

    def kill(self) -> None:
        """Kill the listener and every session it forked (like a crashed host)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.kill(proc.pid, signal.SIGSTOP)  # no new forks while we collect them
        except ProcessLookupError:
            pass
        for pid in [proc.pid, *_descendants(proc.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(10)

    stop = kill

    def restart(self) -> SshdServer:
        self.kill()
        return self.start()

    def regenerate_host_key(self) -> None:
        """A new host key (takes effect at the next start)."""
        keygen(self.host_key)

    # -- for clients ------------------------------------------------------------
    def known_hosts_line(self) -> str:
        kind, key = Path(str(self.host_key) + ".pub").read_text().split()[:2]
        return f"[{self.host}]:{self.port} {kind} {key}"

    def spec(self, user: str | None = None):
        """A ``aup_tui_backends.config.HostSpec`` for this server with the client key."""
        from aup_tui_backends.config import HostSpec

        return HostSpec(
            user=user or getpass.getuser(), host=self.host, port=self.port, key=str(self.factory.client_key)
        )

    def mapping_value(self) -> str:
        """The server as an env.ini node_mapping value: ``user@host:port /key``."""
        return f"{getpass.getuser()}@{self.host}:{self.port} {self.factory.client_key}"

    def __repr__(self) -> str:
        return f"<sshd {self.name} 127.0.0.1:{self.port} {'running' if self.running else 'stopped'}>"


class SshdFactory:
    """Starts sshd servers in ``directory`` and stops them all in ``close()``."""

    def __init__(self, directory: Path):
        self.sshd = find_sshd()
        if os.geteuid() == 0:  # privilege separation directory
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        self.dir = Path(directory)
        self.client_key = keygen(self.dir / "client_ed25519")
        self.authorized_keys = self.dir / "authorized_keys"
        self.authorized_keys.write_text(Path(str(self.client_key) + ".pub").read_text())
        self.servers: list[SshdServer] = []
        self._count = 0
        self._lock = threading.Lock()

    def new(
        self, start: bool = True, extra_config: Iterable[str] = (), env: dict[str, str] | None = None
    ) -> SshdServer:
        with self._lock:
            self._count += 1
            name = f"sshd{self._count}"
        server = SshdServer(self, name, extra_config, env)
        with self._lock:
            self.servers.append(server)
        if start:
            server.start()
        return server

    def start_many(
        self, n: int, extra_config: Iterable[str] = (), env: dict[str, str] | None = None
    ) -> list[SshdServer]:
        """``n`` servers, started in parallel."""
        servers = [self.new(start=False, extra_config=extra_config, env=env) for _ in range(n)]
        errors: list[BaseException] = []

        def go(s: SshdServer) -> None:
            try:
                s.start()
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=go, args=(s,)) for s in servers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return servers

    @staticmethod
    def write_known_hosts(path: os.PathLike | str, servers: Iterable[SshdServer]) -> str:
        """A known_hosts file listing ``servers``' current host keys; returns its path."""
        Path(path).write_text("".join(s.known_hosts_line() + "\n" for s in servers))
        return str(path)

    def close(self) -> None:
        for server in self.servers:
            server.kill()


def slow_command_config(seconds: float) -> list[str]:
    """sshd_config lines that delay every command by ``seconds`` (a slow node)."""
    return [f'ForceCommand sleep {seconds}; eval "$SSH_ORIGINAL_COMMAND"']


@pytest.fixture(scope="session")
def sshd_factory(tmp_path_factory):
    factory = SshdFactory(tmp_path_factory.mktemp("sshd"))
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def sshd_server(sshd_factory):
    """A fresh sshd for one test (kill/restart/re-key it freely)."""
    server = sshd_factory.new()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="session")
def sshd_servers(sshd_factory):
    """``SSHD_POOL_SIZE`` shared servers for the session; do not kill them."""
    return sshd_factory.start_many(SSHD_POOL_SIZE)
