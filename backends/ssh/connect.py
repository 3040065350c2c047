"""Opening one SSH connection to a node: host keys checked, every failure one clear sentence.

paramiko is imported here, inside :func:`connect`, never at import time.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from .errors import HostKeyChangedError, NodeAuthError, NodeError, NodeUnreachableError, describe_error
from .host_keys import AcceptNewHost, RejectUnknownHost, known_hosts_name, show_path
from .hosts import host_label, spec_fields

if TYPE_CHECKING:  # pragma: no cover
    import paramiko

__all__ = ["connect", "quiet_close"]


def connect(
    name: str,
    spec: Any,
    *,
    known_hosts: str,
    accept_new_hosts: bool,
    connect_timeout: float,
    keepalive: float,
) -> paramiko.SSHClient:
    """A connected SSHClient to the node ``name`` (``spec``: user, host, port, key).

    Raises a :class:`NodeError` subclass naming the node and what to fix.
    """
    import socket

    import paramiko

    user, host, port, key = spec_fields(spec)
    label = host_label(spec)
    if key:
        key = os.path.expanduser(key)
        if not os.path.isfile(key):
            raise NodeAuthError(
                f"the private key {key} for {label} does not exist — fix the key path in env.ini",
                name,
            )
    quiet_paramiko()
    client = paramiko.SSHClient()
    if os.path.exists(known_hosts):
        try:
            client.get_host_keys().load(known_hosts)
        except (OSError, UnicodeDecodeError) as exc:
            raise NodeError(f"cannot read {show_path(known_hosts)}: {exc}", name) from None
    policy = AcceptNewHost if accept_new_hosts else RejectUnknownHost
    client.set_missing_host_key_policy(policy(known_hosts, name))
    timeout = connect_timeout
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
        quiet_close(client)
        raise
    except paramiko.BadHostKeyException:
        quiet_close(client)
        kh = show_path(known_hosts)
        raise HostKeyChangedError(
            f"host key for {host}:{port} changed — remove the old key from {kh} if this is "
            f"expected (ssh-keygen -R '{known_hosts_name(host, port)}' -f {kh})",
            name,
        ) from None
    except paramiko.AuthenticationException as exc:
        quiet_close(client)
        raise NodeAuthError(
            f"authentication failed for {label}"
            + (f" with key {key}" if key else "")
            + f" ({describe_error(exc)}) — check the user and key in env.ini",
            name,
        ) from None
    except socket.gaierror as exc:
        quiet_close(client)
        raise NodeUnreachableError(f"cannot resolve host {host!r} ({exc.strerror or exc})", name) from None
    except TimeoutError:
        quiet_close(client)
        raise NodeUnreachableError(
            f"cannot connect to {label}: timed out after {timeout:g} s", name
        ) from None
    except paramiko.ssh_exception.NoValidConnectionsError as exc:
        quiet_close(client)
        reason = "connection refused" if _all_refused(exc) else describe_error(exc)
        raise NodeUnreachableError(f"cannot connect to {label}: {reason}", name) from None
    except Exception as exc:  # SSHException, EOFError, OSError, …
        transport = client.get_transport()
        cause = getattr(transport, "saved_exception", None) or exc  # what killed the handshake
        quiet_close(client)
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
        if keepalive > 0:
            transport.set_keepalive(max(1, int(keepalive)))
        try:  # small request/reply packets: no Nagle delay (paramiko leaves it on)
            transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass
    return client


_paramiko_quieted = False


def quiet_paramiko() -> None:
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


def quiet_close(client: Any) -> None:
    """Close, ignoring whatever a broken connection raises on the way."""
    try:
        client.close()
    except Exception:
        pass


def _all_refused(exc: Any) -> bool:
    import errno

    errors = getattr(exc, "errors", {}) or {}
    return bool(errors) and all(getattr(e, "errno", None) == errno.ECONNREFUSED for e in errors.values())
