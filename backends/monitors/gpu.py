"""GPU monitor: samples every GPU NVML reports, on a background thread.

NVML is reached through an injected module with ``pynvml``'s interface (the
real one by default, imported lazily; tests pass ``tests/fake_nvml.py``).
Snapshots are frozen dataclasses, safe to hand to a UI thread.

No driver, no library or no GPU is not an error: the snapshot says
``available=False`` and gives NVML's own reason.  A GPU that fails mid-run is
marked ``lost`` with the reason; the others keep being sampled, and
:meth:`GPUMonitor.sample` never raises.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aup_tui_backends.monitors.sampler import SamplerThread

log = logging.getLogger(__name__)

__all__ = [
    "GPUMonitor",
    "GPUProcess",
    "GPUSnapshot",
    "GPUStatus",
    "JobProcessInfo",
    "nvml_reason",
]

# NVML error codes that mean "this value is not available on this GPU", not
# "this GPU is broken" (same values as pynvml's NVML_ERROR_* constants).
_NOT_AVAILABLE_CODES = {
    3,  # NOT_SUPPORTED
    4,  # NO_PERMISSION
    13,  # FUNCTION_NOT_FOUND (a driver older than the binding)
    21,  # NO_DATA
    25,  # ARGUMENT_VERSION_MISMATCH
    27,  # NOT_READY
}

#: how far up the parent chain a GPU process is followed to find its job
MAX_PARENT_WALK = 64


@dataclass(frozen=True)
class JobProcessInfo:
    """One of our running jobs, as the resource manager knows it.

    ``pid`` is the job's process-group leader (jobs run in their own session),
    ``cards`` the card ids the job was given (``gpu_mapping`` values: GPU
    indices such as ``"0"``, or GPU UUIDs).
    """

    jid: int
    pid: int
    cards: tuple[str, ...] = ()


@dataclass(frozen=True)
class GPUProcess:
    """A compute process on a GPU; ``jid`` is our job it belongs to, or None."""

    pid: int
    used_memory: int | None  # bytes; None when NVML cannot tell
    jid: int | None = None


@dataclass(frozen=True)
class GPUStatus:
    """One GPU at one instant.  Values NVML cannot give are ``None``.

    Memory in bytes, power in watts, temperature in °C, utilisation in %.
    ``history`` is the utilisation of the last samples, oldest first (for a
    sparkline).  ``jobs`` are the jids of our jobs on this GPU: those given
    this card and those with a process on it.
    """

    index: int
    uuid: str = ""
    name: str = ""
    utilization: float | None = None
    memory_used: int | None = None
    memory_total: int | None = None
    temperature: float | None = None
    power_draw: float | None = None
    power_limit: float | None = None
    processes: tuple[GPUProcess, ...] = ()
    jobs: tuple[int, ...] = ()
    history: tuple[float, ...] = ()
    lost: bool = False
    reason: str = ""

    @property
    def memory_fraction(self) -> float | None:
        if self.memory_used is None or not self.memory_total:
            return None
        return self.memory_used / self.memory_total


@dataclass(frozen=True)
class GPUSnapshot:
    """Every GPU at one instant (``timestamp`` from the monitor's clock).

    ``available`` is False when NVML cannot be used at all (no library, no
    driver, no GPU): ``reason`` then says why, in NVML's words.
    """

    available: bool
    gpus: tuple[GPUStatus, ...] = ()
    reason: str = ""
    timestamp: float = 0.0
    driver_version: str = ""

    @property
    def summary(self) -> str:
        """A one-line description for a panel or the CLI."""
        if not self.available:
            return f"no GPUs: {self.reason}"
        lost = sum(1 for g in self.gpus if g.lost)
        text = f"{len(self.gpus)} GPU{'s' if len(self.gpus) != 1 else ''}"
        if lost:
            text += f" ({lost} lost)"
        return text


def nvml_reason(exc: BaseException) -> str:
    """NVML's own message for ``exc``, made readable."""
    try:
        text = str(exc).strip()
    except Exception:  # a pynvml __str__ that itself fails
        text = ""
    if not text:
        value = getattr(exc, "value", None)
        text = f"NVML error {value}" if value is not None else type(exc).__name__
    return text


class _Device:
    __slots__ = ("index", "handle", "uuid", "name", "history", "error")

    def __init__(self, index: int, handle: Any, uuid: str, name: str, history: int):
        self.index = index
        self.handle = handle  # None: NVML would not give one (retried each sample)
        self.uuid = uuid
        self.name = name
        self.history: deque[float] = deque(maxlen=history)
        self.error = ""


def _read_stat(pid: int, proc_root: str) -> tuple[int, int, int] | None:
    """(ppid, pgrp, session) of ``pid`` from /proc, or None if it is gone."""
    try:
        with open(f"{proc_root}/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # the command name is in parentheses and may itself contain ") "
    end = data.rfind(b")")
    if end < 0:
        return None
    fields = data[end + 2 :].split(None, 4)
    try:
        return int(fields[1]), int(fields[2]), int(fields[3])
    except (IndexError, ValueError):
        return None


class _JobMatcher:
    """Resolves pids to our jobs for one sample (memoised over the walk)."""

    def __init__(self, jobs: Mapping[int, JobProcessInfo], proc_root: str):
        self.by_pid = {j.pid: j.jid for j in jobs.values() if j.pid and j.pid > 1}
        self.proc_root = proc_root
        self.memo: dict[int, int | None] = {}

    def jid_of(self, pid: int) -> int | None:
        if not self.by_pid or pid <= 1:
            return None
        memo = self.memo
        if pid in memo:
            return memo[pid]
        walked: list[int] = []
        found: int | None = None
        p = pid
        for _ in range(MAX_PARENT_WALK):
            if p in memo:
                found = memo[p]
                break
            walked.append(p)
            if p in self.by_pid:
                found = self.by_pid[p]
                break
            stat = _read_stat(p, self.proc_root)
            if stat is None:
                break
            ppid, pgrp, session = stat
            # jobs run in their own session/process group led by job.pid, so a
            # process whose parent has died (reparented to init) still matches
            if pgrp in self.by_pid:
                found = self.by_pid[pgrp]
                break
            if session in self.by_pid:
                found = self.by_pid[session]
                break
            if ppid <= 1:
                break
            p = ppid
        for w in walked:
            memo[w] = found
        return found


class GPUMonitor:
    """Samples the local GPUs through NVML.

    ``sample()`` takes one sample of every GPU; ``start(callback)`` samples on
    a background thread every ``interval`` seconds (the next sample is
    scheduled after the previous one and its callback finished, so a slow
    sample never piles up) and calls ``callback(snapshot)`` from that thread.
    """

    def __init__(
        self,
        nvml: Any = None,
        interval: float = 1.0,
        history: int = 60,
        clock: Callable[[], float] = time.monotonic,
        *,
        retry_init: float = 30.0,
        proc_root: str = "/proc",
    ):
        self._nvml = nvml
        self.interval = float(interval)
        self.history = int(history)
        self.clock = clock
        self.retry_init = float(retry_init)
        self.proc_root = proc_root
        self._lock = threading.Lock()
        self._jobs: dict[int, JobProcessInfo] = {}
        self._devices: list[_Device] | None = None
        self._initialized = False
        self._init_reason = ""
        self._init_tried_at: float | None = None
        self._driver_version = ""
        self._procs_fn: Callable[[Any], Any] | None = None  # handle → its compute processes
        self._last: GPUSnapshot | None = None
        self._sampler = SamplerThread("aup-gpu-monitor")

    # -- jobs ---------------------------------------------------------------
    def set_jobs(self, jobs: Mapping[int, JobProcessInfo] | Iterable[JobProcessInfo]) -> None:
        """Tell the monitor which jobs run now (jid → JobProcessInfo)."""
        if isinstance(jobs, Mapping):
            new = dict(jobs)
        else:
            new = {j.jid: j for j in jobs}
        self._jobs = new  # replaced atomically; read once per sample

    @property
    def last(self) -> GPUSnapshot | None:
        """The latest snapshot, or None before the first sample."""
        return self._last

    # -- NVML setup -----------------------------------------------------------
    def _module(self) -> Any:
        """The NVML binding (pynvml, untyped, or the fake the tests pass)."""
        if self._nvml is None:
            import pynvml  # lazily: keeps `aup-tui --help` fast

            self._nvml = pynvml
        return self._nvml

    def _ensure_init(self) -> bool:
        """Init NVML and cache the handles once; retry now and then if it failed."""
        if self._devices is not None:
            return True
        now = self.clock()
        if self._init_tried_at is not None and now - self._init_tried_at < self.retry_init:
            return False
        self._init_tried_at = now
        try:
            nvml = self._module()
        except ImportError:
            self._init_reason = "the NVML binding is not installed (pip install nvidia-ml-py)"
            return False
        except Exception as exc:  # a broken binding
            self._init_reason = f"the NVML binding failed to load: {exc}"
            return False
        error = getattr(nvml, "NVMLError", Exception)
        try:
            if not self._initialized:
                nvml.nvmlInit()
                self._initialized = True
            try:
                version = nvml.nvmlSystemGetDriverVersion()
                self._driver_version = version.decode() if isinstance(version, bytes) else str(version)
            except error:
                self._driver_version = ""
            count = nvml.nvmlDeviceGetCount()
            devices = []
            for i in range(count):
                dev = _Device(i, None, "", "", self.history)
                self._open_device(dev)  # one broken GPU does not hide the others
                devices.append(dev)
        except error as exc:
            self._init_reason = nvml_reason(exc)
            return False
        except Exception as exc:
            self._init_reason = f"NVML failed: {exc}"
            return False
        if not devices:
            self._init_reason = "NVML reports no GPUs"
            return False
        self._devices = devices
        self._procs_fn = nvml.nvmlDeviceGetComputeRunningProcesses
        self._init_reason = ""
        return True

    def _open_device(self, dev: _Device) -> bool:
        """Get (and keep) the device's handle, UUID and name."""
        nvml = self._nvml
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(dev.index)
            dev.uuid = _text(_optional(nvml, nvml.nvmlDeviceGetUUID, handle, ""))
            dev.name = _text(_optional(nvml, nvml.nvmlDeviceGetName, handle, ""))
        except Exception as exc:
            dev.handle, dev.error = None, nvml_reason(exc)
            return False
        dev.handle, dev.error = handle, ""
        return True

    # -- sampling -------------------------------------------------------------
    def sample(self) -> GPUSnapshot:
        """One sample of every GPU.  Never raises."""
        with self._lock:
            try:
                snap = self._sample()
            except Exception as exc:  # a bug or a binding gone wrong: still no raise
                log.exception("GPU sample failed")
                snap = GPUSnapshot(
                    available=False, reason=f"GPU sampling failed: {exc}", timestamp=self.clock()
                )
            self._last = snap
            return snap

    def _sample(self) -> GPUSnapshot:
        if not self._ensure_init():
            return GPUSnapshot(available=False, reason=self._init_reason, timestamp=self.clock())
        nvml = self._nvml
        error = nvml.NVMLError
        sensor = nvml.NVML_TEMPERATURE_GPU
        get_util = nvml.nvmlDeviceGetUtilizationRates
        get_mem = nvml.nvmlDeviceGetMemoryInfo
        get_temp = nvml.nvmlDeviceGetTemperature
        get_power = nvml.nvmlDeviceGetPowerUsage
        get_limit = nvml.nvmlDeviceGetEnforcedPowerLimit

        jobs = self._jobs
        matcher = _JobMatcher(jobs, self.proc_root)
        cards: dict[str, list[int]] = {}
        for job in jobs.values():
            for card in job.cards:
                cards.setdefault(str(card), []).append(job.jid)

        statuses = []
        for dev in self._devices:  # type: ignore[union-attr]
            if dev.handle is None and not self._open_device(dev):
                statuses.append(_lost_status(dev, cards, dev.error))
                continue
            h = dev.handle
            try:
                util = _field(error, get_util, h)
                mem = _field(error, get_mem, h)
                temp = _field(error, get_temp, h, sensor)
                power = _field(error, get_power, h)
                limit = _field(error, get_limit, h)
                procs = self._processes(h)
            except Exception as exc:  # NVMLError_GpuIsLost & co.: this GPU only
                statuses.append(_lost_status(dev, cards, nvml_reason(exc)))
                continue
            utilization = None if util is None else float(util.gpu)
            if utilization is not None:
                dev.history.append(utilization)
            processes: tuple[GPUProcess, ...] = ()
            job_ids = list(_card_jobs(cards, dev))
            if procs:
                plist = []
                for p in procs:
                    used = getattr(p, "usedGpuMemory", None)
                    jid = matcher.jid_of(p.pid)
                    plist.append(GPUProcess(p.pid, used, jid))
                    if jid is not None and jid not in job_ids:
                        job_ids.append(jid)
                processes = tuple(plist)
            statuses.append(
                GPUStatus(
                    index=dev.index,
                    uuid=dev.uuid,
                    name=dev.name,
                    utilization=utilization,
                    memory_used=None if mem is None else int(mem.used),
                    memory_total=None if mem is None else int(mem.total),
                    temperature=None if temp is None else float(temp),
                    power_draw=None if power is None else power / 1000.0,
                    power_limit=None if limit is None else limit / 1000.0,
                    processes=processes,
                    jobs=tuple(job_ids),
                    history=tuple(dev.history),
                )
            )
        return GPUSnapshot(
            available=True,
            gpus=tuple(statuses),
            timestamp=self.clock(),
            driver_version=self._driver_version,
        )

    def _processes(self, handle: Any) -> Any:
        """The GPU's compute processes; None when this driver cannot list them.

        pynvml calls the newest NVML function (``…_v3``); a driver that lacks it
        makes pynvml raise ``NVMLLibraryMismatchError``: fall back to ``_v2``,
        then to no process list, rather than calling every GPU lost.
        """
        nvml = self._nvml
        while self._procs_fn is not None:
            fn = self._procs_fn
            try:
                return fn(handle)
            except Exception as exc:
                if isinstance(exc, nvml.NVMLError) and getattr(exc, "value", None) in _NOT_AVAILABLE_CODES:
                    if exc.value not in (13, 25):  # FUNCTION_NOT_FOUND, ARGUMENT_VERSION_MISMATCH
                        return None
                elif type(exc).__name__ != "NVMLLibraryMismatchError":
                    raise
                fallback = getattr(nvml, "nvmlDeviceGetComputeRunningProcesses_v2", None)
                self._procs_fn = fallback if fallback is not None and fallback is not fn else None
        return None

    # -- background thread ----------------------------------------------------
    def start(self, callback: Callable[[GPUSnapshot], Any]) -> None:
        """Sample every ``interval`` s on a daemon thread, calling ``callback``."""

        def sample_round() -> float:
            snap = self.sample()
            try:
                callback(snap)
            except Exception:
                log.exception("GPU monitor callback failed")
            return self.interval

        self._sampler.start(sample_round)

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop the background thread (waits for the current sample)."""
        self._sampler.stop(timeout)

    @property
    def running(self) -> bool:
        return self._sampler.running

    def close(self) -> None:
        """Stop, and shut NVML down if this monitor initialised it."""
        self.stop()
        with self._lock:
            if self._initialized:
                try:
                    self._nvml.nvmlShutdown()
                except Exception:
                    pass
                self._initialized = False
            self._devices = None
            self._init_tried_at = None

    def __enter__(self) -> GPUMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _optional(nvml: Any, fn: Callable[[Any], Any], handle: Any, default: Any) -> Any:
    try:
        return fn(handle)
    except nvml.NVMLError as exc:
        if getattr(exc, "value", None) in _NOT_AVAILABLE_CODES:
            return default
        raise


def _field(error: type[BaseException], fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``; None when NVML says the value is not available here.

    Any other NVML error propagates: the GPU is then reported lost.
    """
    try:
        return fn(*args)
    except error as exc:
        if getattr(exc, "value", None) in _NOT_AVAILABLE_CODES:
            return None
        raise


def _lost_status(dev: _Device, cards: dict[str, list[int]], reason: str) -> GPUStatus:
    """A GPU that can't be read now (not opened, or lost mid-sample): its history and jobs, and why."""
    return GPUStatus(
        index=dev.index,
        uuid=dev.uuid,
        name=dev.name,
        jobs=_card_jobs(cards, dev),
        history=tuple(dev.history),
        lost=True,
        reason=reason,
    )


def _card_jobs(cards: dict[str, list[int]], dev: _Device) -> tuple[int, ...]:
    if not cards:
        return ()
    found = list(cards.get(str(dev.index), ()))
    if dev.uuid:
        for jid in cards.get(dev.uuid, ()):
            if jid not in found:
                found.append(jid)
    return tuple(found)
