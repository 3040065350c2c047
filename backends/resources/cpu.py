"""Jobs on this machine's CPUs: `n_parallel` at once, none of them seeing a GPU."""

from __future__ import annotations

from .local import LocalProcessManager


class CPUResourceManager(LocalProcessManager):
    """`CPUResourceManager(connector, n_parallel, ...)`; each job runs with CUDA_VISIBLE_DEVICES=""."""

    rtype = "cpu"

    def job_env(self, rid: int) -> dict[str, str]:
        return {"CUDA_VISIBLE_DEVICES": ""}

    def finish(self, maximize: bool | None = None, status: str = "FINISHED") -> list | None:  # type: ignore[override]
        if maximize is not None:
            self.maximize = maximize
        return super().finish(status)
