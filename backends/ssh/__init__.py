"""The SSH transport shared by the SSH/AWS managers and the node monitor.

- :mod:`.hosts`: env.ini's SSH hosts read once (:func:`env_hosts`) and the one naming of a node
  (:func:`node_display_name`; its key :func:`node_key`; its address :func:`host_label`);
- :mod:`.pool`: :class:`NodePool`, one persistent connection per node, commands with deadlines;
- :mod:`.connect` and :mod:`.host_keys`: opening a connection, the known_hosts policy;
- :mod:`.commands`: starting a command on a channel within a deadline;
- :mod:`.sftp`: one shared SFTP client per node, atomic replace, a folder's download;
- :mod:`.errors`: one error type per thing a person fixes.

Nothing here imports paramiko at import time.
"""

from .commands import exec_within
from .errors import (
    CommandTimeoutError,
    ConnectionLost,
    HostKeyChangedError,
    NodeAuthError,
    NodeError,
    NodeUnreachableError,
    UnknownHostKeyError,
    describe_error,
)
from .hosts import (
    EnvHost,
    env_host_specs,
    env_hosts,
    host_label,
    is_instance_id,
    node_display_name,
    node_key,
    short_node_name,
)
from .pool import NodePool

__all__ = [
    "CommandTimeoutError",
    "ConnectionLost",
    "EnvHost",
    "HostKeyChangedError",
    "NodeAuthError",
    "NodeError",
    "NodePool",
    "NodeUnreachableError",
    "UnknownHostKeyError",
    "describe_error",
    "env_host_specs",
    "env_hosts",
    "exec_within",
    "host_label",
    "is_instance_id",
    "node_display_name",
    "node_key",
    "short_node_name",
]
