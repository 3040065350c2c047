"""The errors of the SSH transport: each names the node and says in one sentence what to fix."""

from __future__ import annotations

from aup_tui_backends.errors import AupError

__all__ = [
    "CommandTimeoutError",
    "ConnectionLost",
    "HostKeyChangedError",
    "NodeAuthError",
    "NodeError",
    "NodeUnreachableError",
    "UnknownHostKeyError",
    "describe_error",
]


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


class ConnectionLost(AupError):
    """The connection to a node broke (or was refused) while a job needed it: the job's attempt
    is retried."""


def describe_error(exc: BaseException) -> str:
    """One line for a connection error (an empty EOFError reads 'the connection closed')."""
    text = " ".join(str(exc).split())  # one line
    if isinstance(exc, EOFError) and not text:
        return "the connection closed"
    return text or type(exc).__name__
