"""aup-tui's engine: Auptimizer-compatible resource managers on an embedded TinyDB store.

This package never imports Textual; heavy modules (boto3, paramiko, pynvml) load where used.
"""

from typing import Any

from .errors import AupError, ConfigError, JobError
from .events import EventBus
from .experiment import Experiment, ExperimentResult, summarize
from .jobs import Job, parse_pasted_output, parse_result_line
from .resources import (
    AbstractResourceManager,
    CPUResourceManager,
    GPUResourceManager,
    PassiveResourceManager,
    get_resource_manager,
)
from .store import TinyDBConnector, get_default_connector


def __getattr__(name: str) -> Any:
    """The SSH and AWS managers load paramiko/boto3 only when first asked for."""
    if name in ("SSHResourceManager", "AWSResourceManager"):
        from . import resources

        return getattr(resources, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AWSResourceManager",
    "AbstractResourceManager",
    "AupError",
    "SSHResourceManager",
    "CPUResourceManager",
    "ConfigError",
    "EventBus",
    "Experiment",
    "ExperimentResult",
    "GPUResourceManager",
    "Job",
    "JobError",
    "PassiveResourceManager",
    "TinyDBConnector",
    "get_default_connector",
    "get_resource_manager",
    "parse_pasted_output",
    "parse_result_line",
    "summarize",
]
