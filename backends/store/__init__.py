"""The embedded store: TinyDB files under `.aup/store/`, safe across threads and processes."""

from .connector import LIVE_STATES, TinyDBConnector, better
from .files import StoreCorruptError, StoreWriteError

__all__ = [
    "LIVE_STATES",
    "StoreCorruptError",
    "StoreWriteError",
    "TinyDBConnector",
    "better",
    "get_default_connector",
]


def get_default_connector(auppath: str = ".aup") -> TinyDBConnector:
    """The store connector for the `.aup` folder at `auppath` (as `aup.utils.get_default_connector`)."""
    return TinyDBConnector(auppath)
