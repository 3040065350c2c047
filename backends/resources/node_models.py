"""save_model on nodes: the best job's re-run saved its models on a node; bring them here.

:class:`NodeModelDownload` is a part of :class:`~aup_tui_backends.resources.ssh.SSHResourceManager`
(its base): it downloads ``<workingdir>/aup_models/models_<eid>`` over the manager's SFTP
sessions, retrying a lost connection as jobs do.
"""

from __future__ import annotations

import logging
import posixpath
import stat
import time
from typing import TYPE_CHECKING, Any

from ..errors import AupError
from ..jobs import Job
from ..remote import RemoteJobPaths
from ..ssh import ConnectionLost, NodePool, NodeUnreachableError, describe_error
from ..ssh.sftp import LocalWriteError, SFTPSessions, download_tree
from .node_jobs import NodeJobState

__all__ = ["NodeModelDownload"]

log = logging.getLogger(__name__)


class NodeModelDownload:
    """Downloading the best job's models from its node (a base of SSHResourceManager)."""

    # what this part uses of the manager (set in SSHResourceManager.__init__ and its bases)
    pool: NodePool
    names: dict[int, str]
    max_retries: int
    reconn_wait_time: float
    _sftp: SFTPSessions
    _model_paths: dict[int, RemoteJobPaths]

    if TYPE_CHECKING:  # the manager's methods this part calls

        def display_name(self, rid: int) -> str: ...
        def ensure_jid(self, job: Job) -> int: ...
        def models_dir(self, job: Job) -> str: ...
        def _sftp_client(
            self, pool: NodePool, name: str, state: NodeJobState | None = None
        ) -> tuple[Any, Any]: ...
        def _connection_broken(self, state: NodeJobState) -> bool: ...
        def _sftp_lost(self, state: NodeJobState) -> bool: ...

    def collect_models(self, job: Job, rid: int) -> None:
        """Download what the best job's re-run saved on its node, `<workingdir>/aup_models/models_<eid>`
        there (every file, folders included), into `models_dir(job)` here, as Auptimizer does.
        Every SFTP request answers within start_timeout; a lost connection is retried
        `max_retries` times. Sets `job.error` (one sentence) when the models are not brought here."""
        paths = self._model_paths.pop(self.ensure_jid(job), None)
        name, label = self.names[rid], self.display_name(rid)
        local_dir = self.models_dir(job)
        if paths is None:
            job.error = f"the best job {job.jid} did not run on {label}; no models to download"
            return
        remote_dir = posixpath.join(paths.workingdir, "aup_models", f"models_{job.eid}")
        failures = 0
        while True:
            state = NodeJobState(name=name, pool=self.pool)
            try:
                sftp, lock = self._sftp_client(self.pool, name, state)
                with lock:
                    try:
                        st = sftp.stat(remote_dir)
                    except FileNotFoundError:
                        job.error = (
                            f"the best job {job.jid} saved no models on {label}: {remote_dir} is not "
                            "there (its script saves them when its config has save_model: true, "
                            "in aup_models/<folder_name> of its working folder)"
                        )
                        return
                    if not stat.S_ISDIR(st.st_mode or 0):
                        job.error = f"{remote_dir} on {label} is not a folder; no models downloaded"
                        return
                    count = download_tree(sftp, remote_dir, local_dir)
                log.info(
                    "downloaded %d files of the best job's models from %s on %s to %s",
                    count,
                    remote_dir,
                    label,
                    local_dir,
                )
                return
            except LocalWriteError as exc:
                job.error = (
                    f"cannot write the best job's models to {exc.path} ({exc.reason}): "
                    "make room there or make it writable"
                )
                return
            except Exception as exc:  # noqa: BLE001 -- each kind gets its sentence
                lost = (
                    isinstance(exc, (ConnectionLost, NodeUnreachableError, TimeoutError, EOFError))
                    or self._connection_broken(state)
                    or self._sftp_lost(state)
                )
                if isinstance(exc, TimeoutError):
                    self._sftp.drop(self.pool, name, state.sftp)
                failures += 1
                why = describe_error(exc) if not isinstance(exc, AupError) else str(exc)
                if not lost or failures > self.max_retries:
                    job.error = f"cannot download the models in {remote_dir} from {label}: {why}"
                    return
                log.warning(
                    "downloading the models from %s: %s; trying again in %g s",
                    label,
                    why,
                    self.reconn_wait_time,
                )
                time.sleep(self.reconn_wait_time)
