"""A stand-in for the ``pynvml`` module (NVIDIA's ``nvidia-ml-py``).

Same function names, constants, exception classes and error codes as the real
binding (``test_fake_nvml_matches_pynvml`` checks them against the installed
``pynvml``), backed by configurable GPUs whose values can change between
samples, with compute processes and failure injection::

    nvml = FakeNVML([FakeGPU(name="NVIDIA A100", util=30), FakeGPU()])
    nvml.gpus[0].util = 80                       # next sample sees 80 %
    nvml.gpus[0].processes = [(pid, 512 << 20)]  # (pid, used bytes)
    nvml.gpus[1].fail = nvml.NVMLError_GpuIsLost()   # every call on it fails
    nvml.gpus[1].unsupported = {"nvmlDeviceGetPowerUsage"}
    nvml.gpus[1].errors["nvmlDeviceGetTemperature"] = nvml.NVMLError_Unknown()
    nvml.init_error = nvml.NVMLError_DriverNotLoaded()
    nvml.calls["nvmlDeviceGetHandleByIndex"]     # how often it was called
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# --- constants (same values as pynvml) -------------------------------------
NVML_SUCCESS = 0
NVML_TEMPERATURE_GPU = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_ALREADY_INITIALIZED = 5
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_INSUFFICIENT_SIZE = 7
NVML_ERROR_INSUFFICIENT_POWER = 8
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_IRQ_ISSUE = 11
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_CORRUPTED_INFOROM = 14
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_RESET_REQUIRED = 16
NVML_ERROR_OPERATING_SYSTEM = 17
NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18
NVML_ERROR_IN_USE = 19
NVML_ERROR_MEMORY = 20
NVML_ERROR_NO_DATA = 21
NVML_ERROR_UNKNOWN = 999

_MESSAGES = {
    NVML_ERROR_UNINITIALIZED: "Uninitialized",
    NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_NO_PERMISSION: "Insufficient Permissions",
    NVML_ERROR_ALREADY_INITIALIZED: "Already Initialized",
    NVML_ERROR_NOT_FOUND: "Not Found",
    NVML_ERROR_INSUFFICIENT_SIZE: "Insufficient Size",
    NVML_ERROR_INSUFFICIENT_POWER: "Insufficient External Power",
    NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
    NVML_ERROR_TIMEOUT: "Timeout",
    NVML_ERROR_IRQ_ISSUE: "Interrupt Request Issue",
    NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    NVML_ERROR_FUNCTION_NOT_FOUND: "Function Not Found",
    NVML_ERROR_CORRUPTED_INFOROM: "Corrupted infoROM",
    NVML_ERROR_GPU_IS_LOST: "GPU is lost",
    NVML_ERROR_RESET_REQUIRED: "GPU requires restart",
    NVML_ERROR_OPERATING_SYSTEM: "The operating system has blocked the request.",
    NVML_ERROR_LIB_RM_VERSION_MISMATCH: "RM has detected an NVML/RM version mismatch.",
    NVML_ERROR_MEMORY: "Insufficient Memory",
    NVML_ERROR_UNKNOWN: "Unknown Error",
}


class NVMLLibraryMismatchError(Exception):
    """pynvml raises it when the driver lacks the function version it calls."""


# --- exceptions: NVMLError(value) returns the subclass for that value --------
class NVMLError(Exception):
    _valClassMapping: dict[int, type] = {}

    def __new__(cls, value=None):
        if cls is NVMLError:
            cls = NVMLError._valClassMapping.get(value, cls)
        obj = Exception.__new__(cls)
        obj.value = value
        return obj

    def __init__(self, *args):
        super().__init__()

    def __str__(self):
        return _MESSAGES.get(self.value, f"NVML Error with code {self.value}")

    def __eq__(self, other):
        return isinstance(other, NVMLError) and self.value == other.value

    __hash__ = Exception.__hash__


def _error_class(name: str, value: int) -> type:
    def __new__(cls, *args):
        return NVMLError.__new__(cls, value)

    klass = type(name, (NVMLError,), {"__new__": __new__})
    klass.__module__ = __name__
    NVMLError._valClassMapping[value] = klass
    return klass


NVMLError_Uninitialized = _error_class("NVMLError_Uninitialized", NVML_ERROR_UNINITIALIZED)
NVMLError_InvalidArgument = _error_class("NVMLError_InvalidArgument", NVML_ERROR_INVALID_ARGUMENT)
NVMLError_NotSupported = _error_class("NVMLError_NotSupported", NVML_ERROR_NOT_SUPPORTED)
NVMLError_NoPermission = _error_class("NVMLError_NoPermission", NVML_ERROR_NO_PERMISSION)
NVMLError_NotFound = _error_class("NVMLError_NotFound", NVML_ERROR_NOT_FOUND)
NVMLError_DriverNotLoaded = _error_class("NVMLError_DriverNotLoaded", NVML_ERROR_DRIVER_NOT_LOADED)
NVMLError_Timeout = _error_class("NVMLError_Timeout", NVML_ERROR_TIMEOUT)
NVMLError_FunctionNotFound = _error_class("NVMLError_FunctionNotFound", NVML_ERROR_FUNCTION_NOT_FOUND)
NVMLError_LibraryNotFound = _error_class("NVMLError_LibraryNotFound", NVML_ERROR_LIBRARY_NOT_FOUND)
NVMLError_GpuIsLost = _error_class("NVMLError_GpuIsLost", NVML_ERROR_GPU_IS_LOST)
NVMLError_ResetRequired = _error_class("NVMLError_ResetRequired", NVML_ERROR_RESET_REQUIRED)
NVMLError_NoData = _error_class("NVMLError_NoData", NVML_ERROR_NO_DATA)
NVMLError_Unknown = _error_class("NVMLError_Unknown", NVML_ERROR_UNKNOWN)

ERROR_CLASSES = {
    name: value
    for name, value in globals().items()
    if name.startswith("NVMLError_") and isinstance(value, type)
}
CONSTANTS = {
    name: value for name, value in globals().items() if name.startswith("NVML_") and isinstance(value, int)
}


# --- the returned structures --------------------------------------------------
class _Obj:
    def __init__(self, **kw):
        self.__dict__.update(kw)

    def __repr__(self):
        return f"{type(self).__name__}({self.__dict__})"


class c_nvmlUtilization_t(_Obj):  # .gpu, .memory (percent)
    pass


class c_nvmlMemory_t(_Obj):  # .total, .free, .used (bytes)
    pass


class nvmlFriendlyObject(_Obj):  # processes: .pid, .usedGpuMemory, ...
    pass


@dataclass
class FakeGPU:
    """One GPU; change any field between samples."""

    name: str = "NVIDIA A100-SXM4-40GB"
    uuid: str = ""
    util: int = 0
    mem_util: int = 0
    mem_used: int = 0
    mem_total: int = 40 << 30
    temp: int = 40
    power_mw: int = 60_000
    power_limit_mw: int = 400_000
    processes: list[tuple[int, int | None]] = field(default_factory=list)
    fail: BaseException | None = None  # raised by every call on this GPU
    unsupported: set[str] = field(default_factory=set)  # function names → NotSupported
    errors: dict[str, BaseException] = field(default_factory=dict)  # function name → raised


class FakeNVML:
    """The fake module object (pass it as ``GPUMonitor(nvml=...)``)."""

    NVMLError = NVMLError
    NVMLLibraryMismatchError = NVMLLibraryMismatchError

    def __init__(self, gpus: list[FakeGPU] | None = None, driver_version: str = "550.54.15"):
        self.gpus: list[FakeGPU] = list(gpus or [])
        for i, gpu in enumerate(self.gpus):
            if not gpu.uuid:
                gpu.uuid = f"GPU-{i:08d}-fake-0000-0000-{i:012d}"
        self.driver_version = driver_version
        self.init_error: BaseException | None = None
        self.initialized = 0
        self.calls: Counter[str] = Counter()

    # -- helpers -----------------------------------------------------------
    def _gpu(self, fn: str, handle: Any) -> FakeGPU:
        self.calls[fn] += 1
        if not self.initialized:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)
        if not isinstance(handle, _Handle) or handle.nvml is not self:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        gpu = handle.gpu
        if gpu.fail is not None:
            raise gpu.fail
        if fn in gpu.unsupported:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        if fn in gpu.errors:
            raise gpu.errors[fn]
        return gpu

    # -- library -----------------------------------------------------------
    def nvmlInit(self):
        self.calls["nvmlInit"] += 1
        if self.init_error is not None:
            raise self.init_error
        self.initialized += 1

    def nvmlInitWithFlags(self, flags):
        self.nvmlInit()

    def nvmlShutdown(self):
        self.calls["nvmlShutdown"] += 1
        if not self.initialized:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)
        self.initialized -= 1

    def nvmlErrorString(self, result):
        return _MESSAGES.get(result, "Unknown Error")

    def nvmlSystemGetDriverVersion(self):
        self.calls["nvmlSystemGetDriverVersion"] += 1
        if not self.initialized:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)
        return self.driver_version

    def nvmlDeviceGetCount(self):
        self.calls["nvmlDeviceGetCount"] += 1
        if not self.initialized:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index):
        self.calls["nvmlDeviceGetHandleByIndex"] += 1
        if not self.initialized:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)
        if not 0 <= index < len(self.gpus):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        gpu = self.gpus[index]
        if gpu.fail is not None:
            raise gpu.fail
        return _Handle(self, index, gpu)

    # -- per device --------------------------------------------------------
    def nvmlDeviceGetIndex(self, handle):
        self._gpu("nvmlDeviceGetIndex", handle)
        return handle.index

    def nvmlDeviceGetName(self, handle):
        return self._gpu("nvmlDeviceGetName", handle).name

    def nvmlDeviceGetUUID(self, handle):
        return self._gpu("nvmlDeviceGetUUID", handle).uuid

    def nvmlDeviceGetUtilizationRates(self, handle):
        gpu = self._gpu("nvmlDeviceGetUtilizationRates", handle)
        return c_nvmlUtilization_t(gpu=gpu.util, memory=gpu.mem_util)

    def nvmlDeviceGetMemoryInfo(self, handle, version=None):
        gpu = self._gpu("nvmlDeviceGetMemoryInfo", handle)
        return c_nvmlMemory_t(total=gpu.mem_total, used=gpu.mem_used, free=gpu.mem_total - gpu.mem_used)

    def nvmlDeviceGetTemperature(self, handle, sensor):
        gpu = self._gpu("nvmlDeviceGetTemperature", handle)
        if sensor != NVML_TEMPERATURE_GPU:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return gpu.temp

    def nvmlDeviceGetPowerUsage(self, handle):
        return self._gpu("nvmlDeviceGetPowerUsage", handle).power_mw

    def nvmlDeviceGetEnforcedPowerLimit(self, handle):
        return self._gpu("nvmlDeviceGetEnforcedPowerLimit", handle).power_limit_mw

    def nvmlDeviceGetPowerManagementLimit(self, handle):
        return self._gpu("nvmlDeviceGetPowerManagementLimit", handle).power_limit_mw

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        gpu = self._gpu("nvmlDeviceGetComputeRunningProcesses", handle)
        return [
            nvmlFriendlyObject(
                pid=pid, usedGpuMemory=used, gpuInstanceId=0xFFFFFFFF, computeInstanceId=0xFFFFFFFF
            )
            for pid, used in gpu.processes
        ]


# expose the constants and exception classes as attributes, like the module
for _name, _value in {**CONSTANTS, **ERROR_CLASSES}.items():
    setattr(FakeNVML, _name, _value)
del _name, _value


class _Handle:
    __slots__ = ("nvml", "index", "gpu")

    def __init__(self, nvml: FakeNVML, index: int, gpu: FakeGPU):
        self.nvml = nvml
        self.index = index
        self.gpu = gpu


#: the names of FakeNVML's functions that mirror pynvml's
FUNCTIONS = sorted(n for n in vars(FakeNVML) if n.startswith("nvml") and callable(getattr(FakeNVML, n)))
