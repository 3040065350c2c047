"""SFTP over the pooled connections: one shared client per node, opened and answering within a
deadline, and the file operations jobs need (atomic replace, a folder's download)."""

from __future__ import annotations

import os
import posixpath
import stat
import threading
import uuid
from typing import Any

from aup_tui_backends.errors import AupError

from .commands import exec_within
from .errors import CommandTimeoutError, ConnectionLost, NodeError, describe_error
from .pool import NodePool

__all__ = ["LocalWriteError", "SFTPSessions", "download_tree", "replace"]


class SFTPSessions:
    """Each node's shared SFTP client (one per pool and node) and the lock to hold while using it.

    Every SFTP answer must come within ``timeout`` s: a wedged channel fails its caller's
    attempt (``TimeoutError``) rather than hanging it; the caller then drops the client.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = float(timeout)
        self._lock = threading.Lock()
        self._clients: dict[tuple[int, str], tuple[Any, Any]] = {}  # (id(pool), name) → (transport, client)
        self._locks: dict[tuple[int, str], threading.Lock] = {}

    def get(self, pool: NodePool, name: str) -> tuple[Any, threading.Lock]:
        """The node's SFTP client (opened, or opened again on a new connection) and its lock.

        Raises :class:`ConnectionLost` when the connection broke or SFTP did not start in time,
        :class:`NodeError` when the node refuses SFTP."""
        import paramiko

        key = (id(pool), name)
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            transport = pool.get_transport(name)
            cached = self._clients.get(key)
            if cached is not None and cached[0] is transport and transport.is_active():
                return cached[1], lock
            try:
                chan = transport.open_session(timeout=self.timeout)
                chan.settimeout(self.timeout)
                exec_within(chan, "sftp", self.timeout, pool.label(name), subsystem=True)
                sftp = paramiko.SFTPClient(chan)
            except (CommandTimeoutError, TimeoutError) as exc:
                raise ConnectionLost(
                    f"{pool.label(name)} did not start SFTP within {self.timeout:g} s "
                    f"(start_timeout): {describe_error(exc)}"
                ) from None
            except Exception as exc:
                if not transport.is_active():
                    pool.mark_down(name, f"lost the connection to {pool.label(name)}: {describe_error(exc)}")
                    raise ConnectionLost(
                        f"lost the connection to {pool.label(name)}: {describe_error(exc)}"
                    ) from None
                raise NodeError(
                    f"cannot open SFTP on {pool.label(name)} ({describe_error(exc)}) — "
                    "enable the sftp subsystem in its sshd_config",
                    name,
                ) from None
            if cached is not None:
                _quiet_close(cached[1])
            self._clients[key] = (transport, sftp)
            return sftp, lock

    def drop(self, pool: NodePool, name: str, sftp: Any = None) -> None:
        """Close the node's client (only if it is still ``sftp``, when given: one opened since by
        another caller stays)."""
        key = (id(pool), name)
        with self._lock:
            cached = self._clients.get(key)
            if cached is None or (sftp is not None and cached[1] is not sftp):
                return
            del self._clients[key]
        _quiet_close(cached[1])

    def is_current(self, pool: NodePool, name: str, sftp: Any) -> bool:
        """False when ``sftp`` was closed under its user (dropped after another caller's request
        on it timed out, or its channel closed)."""
        cached = self._clients.get((id(pool), name))
        return cached is not None and cached[1] is sftp and not getattr(sftp.sock, "closed", False)

    def close(self) -> None:
        """Close every client."""
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for _, sftp in clients:
            _quiet_close(sftp)


def _quiet_close(sftp: Any) -> None:
    try:
        sftp.close()
    except Exception:
        pass


def replace(sftp: Any, tmp: str, dest: str) -> None:
    """Atomically move ``tmp`` over ``dest`` on the node."""
    try:
        sftp.posix_rename(tmp, dest)
    except OSError:
        try:
            sftp.remove(dest)
        except FileNotFoundError:
            pass
        sftp.rename(tmp, dest)


class LocalWriteError(AupError):
    """A downloaded file could not be written here."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def download_tree(sftp: Any, remote_dir: str, local_dir: str, depth: int = 0) -> int:
    """Copy the node's folder `remote_dir` into `local_dir` (made as needed), recursively;
    returns how many files. A link to a file is copied as the file; a link to a folder is
    not followed (no loops). Each file lands whole (written aside, then renamed), so a node
    whose folder is this very folder (loopback, a shared file system) keeps its files."""
    entries = sftp.listdir_attr(remote_dir)
    try:
        os.makedirs(local_dir, exist_ok=True)
    except OSError as exc:
        raise LocalWriteError(local_dir, exc.strerror or str(exc)) from None
    count = 0
    for entry in entries:
        name = entry.filename
        if name in (".", "..") or "/" in name or name.endswith(".aup-download"):
            continue
        src, dest = posixpath.join(remote_dir, name), os.path.join(local_dir, name)
        mode = entry.st_mode or 0
        if stat.S_ISLNK(mode):
            try:
                mode = sftp.stat(src).st_mode or 0
            except FileNotFoundError:  # a dangling link
                continue
            if stat.S_ISDIR(mode):
                continue
        if stat.S_ISDIR(mode):
            if depth < 32:
                count += download_tree(sftp, src, dest, depth + 1)
        elif stat.S_ISREG(mode):
            tmp = os.path.join(local_dir, f".{name}.{uuid.uuid4().hex[:8]}.aup-download")
            try:
                try:
                    sftp.get(src, tmp)
                    os.replace(tmp, dest)
                except OSError as exc:
                    if getattr(exc, "filename", None) in (tmp, dest):  # here, not on the node
                        raise LocalWriteError(dest, exc.strerror or str(exc)) from None
                    raise
            finally:
                try:
                    os.remove(tmp)
                except OSError:
                    pass
            count += 1
    return count
