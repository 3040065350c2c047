"""The CPU manager's former name, `LocalProcessManager`: the seed's tree makes
`CPUResourceManager` the local-process manager (and `GPUResourceManager` one of them). The
helpers it runs jobs with are in :mod:`.processes`."""

from __future__ import annotations

from .cpu import CPUResourceManager as LocalProcessManager

__all__ = ["LocalProcessManager"]
