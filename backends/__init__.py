"""aup-tui's engine: Auptimizer-compatible resource managers on an embedded TinyDB store.

This package never imports Textual; heavy modules (boto3, paramiko, pynvml) load where used.
"""

from .errors import AupError, ConfigError
from .events import EventBus
from .experiment import Experiment, ExperimentResult, summarize
from .jobs import Job, JobError, parse_pasted_output, parse_result_line
from .resources import (
    AbstractResourceManager,
    CPUResourceManager,
    GPUResourceManager,
    PassiveResourceManager,
    get_resource_manager,
)
from .store import TinyDBConnector, get_default_connector

__all__ = [
    "AbstractResourceManager", "AupError", "CPUResourceManager", "ConfigError", "EventBus", "Experiment",
    "ExperimentResult", "GPUResourceManager", "Job", "JobError", "PassiveResourceManager", "TinyDBConnector",
    "get_default_connector", "get_resource_manager", "parse_pasted_output", "parse_result_line", "summarize",
]
