"""Jobs on this machine's GPUs: each job sees only the card its resource id maps to."""

from __future__ import annotations

from typing import Any

from ..env_ini import load_env
from ..errors import ConfigError
from ..store import TinyDBConnector
from .cpu import CPUResourceManager


class GPUResourceManager(CPUResourceManager):
    """`GPUResourceManager(connector, n_parallel, auppath='.aup', ...)` over env.ini's `gpu_mapping`:
    a CPU manager whose jobs each see only the card their resource id maps to.

    Several resource ids may map to one card (`{"1": "0", "2": "0"}`: two slots on card 0).
    """

    rtype = "gpu"

    def __init__(
        self, connector: TinyDBConnector, n_parallel: int, auppath: str = ".aup", *args: Any, **kwargs: Any
    ) -> None:
        super().__init__(connector, n_parallel, *args, **kwargs)
        env = load_env(auppath)
        self.mapping = {int(rid): str(card) for rid, card in env.gpu_mapping.items()}
        if not self.mapping:
            raise ConfigError(
                f"no GPUs in gpu_mapping of {env.path}: run `aup-tui init --gpu 0,1` (card indices) first"
            )

    def card_of(self, rid: int) -> str:
        card = self.mapping.get(rid)
        if card is None:
            doc = self.connector.get_resource(rid)
            card = doc["name"] if doc else None
        if card is None:
            raise ConfigError(f"resource {rid} is not in gpu_mapping: re-run `aup-tui init --gpu …`")
        return card

    def job_env(self, rid: int) -> dict[str, str]:
        return {"CUDA_VISIBLE_DEVICES": self.card_of(rid)}
