"""Resource managers, one a module, and Auptimizer's `get_resource_manager` factory."""

from __future__ import annotations

from typing import Any

from ..errors import UnknownResourceError
from ..store import TinyDBConnector
from .abstract import AbstractResourceManager
from .cpu import CPUResourceManager
from .gpu import GPUResourceManager
from .passive import PassiveResourceManager

RESOURCE_TYPES = ("cpu", "gpu", "node", "aws", "passive", "ray")


def get_resource_manager(
    resource: str, connector: TinyDBConnector, n_parallel: int, auppath: str = ".aup", **kwargs: Any
) -> AbstractResourceManager:
    """The manager for `resource` (cpu, gpu, node, aws, passive, ray), as Auptimizer's factory; an
    unknown type is an UnknownResourceError (a ConfigError, and the KeyError Auptimizer raises)."""
    if resource == "cpu":
        return CPUResourceManager(connector, n_parallel, **kwargs)
    if resource == "gpu":
        return GPUResourceManager(connector, n_parallel, auppath=auppath, **kwargs)
    if resource == "passive":
        return PassiveResourceManager(connector, n_parallel, **kwargs)
    if resource == "node":
        from .ssh import SSHResourceManager  # paramiko loads when a node is used

        return SSHResourceManager(connector, n_parallel, auppath=auppath, **kwargs)
    if resource == "aws":
        from .aws import AWSResourceManager  # boto3 loads when an instance is used

        return AWSResourceManager(connector, n_parallel, auppath=auppath, **kwargs)
    if resource == "ray":
        from ..optional import require_ray

        require_ray()
        from .ray import RayResourceManager  # Ray loads only for a Ray experiment

        return RayResourceManager(connector, n_parallel, auppath=auppath, **kwargs)
    raise UnknownResourceError(f"unknown resource type {resource!r}: use one of {', '.join(RESOURCE_TYPES)}")


def __getattr__(name: str) -> Any:
    """`SSHResourceManager`, `AWSResourceManager` and `RayResourceManager`, imported on first use."""
    if name == "SSHResourceManager":
        from .ssh import SSHResourceManager

        return SSHResourceManager
    if name == "AWSResourceManager":
        from .aws import AWSResourceManager

        return AWSResourceManager
    if name == "RayResourceManager":
        from .ray import RayResourceManager

        return RayResourceManager
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AWSResourceManager",
    "AbstractResourceManager",
    "CPUResourceManager",
    "GPUResourceManager",
    "PassiveResourceManager",
    "RESOURCE_TYPES",
    "RayResourceManager",
    "SSHResourceManager",
    "get_resource_manager",
]
