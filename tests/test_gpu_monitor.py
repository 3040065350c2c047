"""The GPU monitor against the fake NVML (and the real pynvml's failure here)."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from aup_tui_backends.monitors import GPUMonitor, GPUSnapshot, JobProcessInfo
from fake_nvml import CONSTANTS, ERROR_CLASSES, FUNCTIONS, FakeGPU, FakeNVML

GIB = 1 << 30


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_sample_reports_every_gpu_with_units_and_history():
    nvml = FakeNVML(
        [
            FakeGPU(
                name="NVIDIA A100",
                util=10,
                mem_used=4 * GIB,
                mem_total=40 * GIB,
                temp=51,
                power_mw=123_400,
                power_limit_mw=400_000,
            ),
            FakeGPU(name="NVIDIA T4", util=0, mem_total=16 * GIB),
        ]
    )
    clock = Clock()
    monitor = GPUMonitor(nvml=nvml, history=3, clock=clock)

    snap = monitor.sample()
    assert snap.available and snap.reason == ""
    assert snap.timestamp == 1000.0
    assert snap.driver_version == "550.54.15"
    a100, t4 = snap.gpus
    assert (a100.index, a100.name, t4.index, t4.name) == (0, "NVIDIA A100", 1, "NVIDIA T4")
    assert a100.uuid == nvml.gpus[0].uuid and a100.uuid != t4.uuid
    assert a100.utilization == 10.0
    assert (a100.memory_used, a100.memory_total) == (4 * GIB, 40 * GIB)
    assert a100.memory_fraction == pytest.approx(0.1)
    assert a100.temperature == 51.0
    assert (a100.power_draw, a100.power_limit) == (pytest.approx(123.4), pytest.approx(400.0))
    assert not a100.lost and a100.processes == ()
    assert snap.summary == "2 GPUs"

    # values change between samples; the history keeps the last `history` of them
    for util in (20, 30, 40):
        nvml.gpus[0].util = util
        clock.now += 1
        snap = monitor.sample()
    assert snap.gpus[0].utilization == 40.0
    assert snap.gpus[0].history == (20.0, 30.0, 40.0)
    assert snap.gpus[1].history == (0.0, 0.0, 0.0)
    assert snap.timestamp == 1003.0
    assert monitor.last is snap


def test_nvml_is_initialised_once_and_handles_are_cached():
    nvml = FakeNVML([FakeGPU() for _ in range(4)])
    monitor = GPUMonitor(nvml=nvml)
    for _ in range(5):
        monitor.sample()
    assert nvml.calls["nvmlInit"] == 1
    assert nvml.calls["nvmlDeviceGetCount"] == 1
    assert nvml.calls["nvmlDeviceGetHandleByIndex"] == 4
    assert nvml.calls["nvmlDeviceGetName"] == 4
    assert nvml.calls["nvmlDeviceGetUtilizationRates"] == 20
    monitor.close()
    assert nvml.initialized == 0  # shut down what it initialised


def test_snapshots_are_immutable():
    snap = GPUMonitor(nvml=FakeNVML([FakeGPU()])).sample()
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.available = False  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.gpus[0].utilization = 99  # type: ignore[misc]


@pytest.mark.parametrize(
    "error, reason",
    [
        ("NVMLError_LibraryNotFound", "NVML Shared Library Not Found"),
        ("NVMLError_DriverNotLoaded", "Driver Not Loaded"),
        ("NVMLError_NoPermission", "Insufficient Permissions"),
    ],
)
def test_no_driver_or_library_says_why_in_nvmls_words(error, reason):
    nvml = FakeNVML([FakeGPU()])
    nvml.init_error = getattr(nvml, error)()
    monitor = GPUMonitor(nvml=nvml)
    snap = monitor.sample()
    assert snap == GPUSnapshot(available=False, reason=reason, timestamp=snap.timestamp)
    assert snap.summary == f"no GPUs: {reason}"


def test_no_gpu_at_all():
    snap = GPUMonitor(nvml=FakeNVML([])).sample()
    assert not snap.available and snap.reason == "NVML reports no GPUs"


def test_init_is_retried_later_when_the_driver_appears():
    nvml = FakeNVML([FakeGPU(util=5)])
    nvml.init_error = nvml.NVMLError_DriverNotLoaded()
    clock = Clock()
    monitor = GPUMonitor(nvml=nvml, clock=clock, retry_init=30)
    assert not monitor.sample().available
    nvml.init_error = None
    clock.now += 10
    assert not monitor.sample().available  # not retried at every sample
    assert nvml.calls["nvmlInit"] == 1
    clock.now += 25
    assert monitor.sample().gpus[0].utilization == 5.0


def test_real_pynvml_here_gives_its_own_reason():
    """On a machine without the NVIDIA library the real binding's message comes through."""
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        expected = str(exc)
        snap = GPUMonitor().sample()
        assert not snap.available and snap.reason == expected
    else:  # a machine with a GPU: the monitor sees every one
        count = pynvml.nvmlDeviceGetCount()
        snap = GPUMonitor().sample()
        assert snap.available and len(snap.gpus) == count
        pynvml.nvmlShutdown()


def test_a_lost_gpu_is_marked_and_the_others_keep_going():
    nvml = FakeNVML([FakeGPU(util=10), FakeGPU(util=20), FakeGPU(util=30)])
    monitor = GPUMonitor(nvml=nvml)
    monitor.sample()

    nvml.gpus[1].fail = nvml.NVMLError_GpuIsLost()
    nvml.gpus[0].util = 11
    nvml.gpus[2].util = 33
    snap = monitor.sample()  # never raises
    g0, g1, g2 = snap.gpus
    assert g1.lost and g1.reason == "GPU is lost"
    assert g1.utilization is None and g1.history == (20.0,)
    assert g1.name and g1.uuid  # still identifiable
    assert (g0.lost, g0.utilization, g2.lost, g2.utilization) == (False, 11.0, False, 33.0)
    assert snap.available and snap.summary == "3 GPUs (1 lost)"

    # an unexpected failure of the binding is contained the same way
    nvml.gpus[2].fail = RuntimeError("binding exploded")
    snap = monitor.sample()
    assert snap.gpus[2].lost and snap.gpus[2].reason == "binding exploded"
    assert not snap.gpus[0].lost

    nvml.gpus[1].fail = None  # it came back
    assert not monitor.sample().gpus[1].lost


def test_a_gpu_broken_from_the_start_does_not_hide_the_others():
    nvml = FakeNVML([FakeGPU(util=10), FakeGPU(util=20)])
    nvml.gpus[0].fail = nvml.NVMLError_GpuIsLost()
    monitor = GPUMonitor(nvml=nvml)
    snap = monitor.sample()
    assert snap.available
    assert [(g.index, g.lost, g.reason, g.utilization) for g in snap.gpus] == [
        (0, True, "GPU is lost", None),
        (1, False, "", 20.0),
    ]
    nvml.gpus[0].fail = None
    assert monitor.sample().gpus[0].utilization == 10.0


def test_values_a_gpu_does_not_support_are_none_not_lost():
    nvml = FakeNVML([FakeGPU(util=7)])
    nvml.gpus[0].unsupported = {"nvmlDeviceGetPowerUsage", "nvmlDeviceGetComputeRunningProcesses"}
    gpu = GPUMonitor(nvml=nvml).sample().gpus[0]
    assert not gpu.lost and gpu.utilization == 7.0
    assert gpu.power_draw is None and gpu.power_limit == 400.0 and gpu.processes == ()


def test_a_driver_too_old_to_list_processes_loses_only_the_process_list():
    nvml = FakeNVML([FakeGPU(util=3, processes=[(1, 1)]), FakeGPU(util=4)])
    for gpu in nvml.gpus:
        gpu.errors["nvmlDeviceGetComputeRunningProcesses"] = nvml.NVMLLibraryMismatchError("too old")
    monitor = GPUMonitor(nvml=nvml)
    for _ in range(2):
        snap = monitor.sample()
        assert [(g.lost, g.utilization, g.processes) for g in snap.gpus] == [
            (False, 3.0, ()),
            (False, 4.0, ()),
        ]
    assert nvml.calls["nvmlDeviceGetComputeRunningProcesses"] == 1  # not retried every sample


LEADER = r"""
import subprocess, sys, time
sleep = [sys.executable, "-c", "import time; time.sleep(120)"]
child = subprocess.Popen(sleep)                                  # in the job's process group
escaped = subprocess.Popen(sleep, start_new_session=True)       # own session, still a descendant
mid = subprocess.Popen([sys.executable, "-c",
    "import subprocess, sys; p = subprocess.Popen(%r); print(p.pid, flush=True)" % (sleep,)],
    stdout=subprocess.PIPE, text=True)
orphan = int(mid.stdout.readline())                              # its parent exits: reparented,
mid.wait()                                                       # but still in the job's group
print(child.pid, escaped.pid, orphan, flush=True)
time.sleep(120)
"""


@pytest.fixture
def job_tree():
    """A real job: a session leader with a child, an escaped descendant and an orphan."""
    leader = subprocess.Popen(
        [sys.executable, "-c", LEADER], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    line = leader.stdout.readline()
    child, escaped, orphan = (int(x) for x in line.split())
    unrelated = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        yield {
            "leader": leader.pid,
            "child": child,
            "escaped": escaped,
            "orphan": orphan,
            "unrelated": unrelated.pid,
        }
    finally:
        for pid in (escaped, unrelated.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        os.killpg(leader.pid, signal.SIGKILL)
        leader.wait()
        unrelated.wait()


def test_gpu_processes_are_matched_to_our_jobs(job_tree):
    p = job_tree
    assert os.getpgid(p["orphan"]) == p["leader"]
    nvml = FakeNVML([FakeGPU(), FakeGPU(), FakeGPU()])
    nvml.gpus[0].processes = [(p["leader"], 1 * GIB), (p["child"], 2 * GIB)]
    nvml.gpus[1].processes = [(p["escaped"], 3 * GIB), (p["orphan"], None), (p["unrelated"], 5 * GIB)]
    nvml.gpus[2].processes = [(999_999_999, 1)]  # a pid that does not exist (here)
    monitor = GPUMonitor(nvml=nvml)
    monitor.set_jobs(
        {
            7: JobProcessInfo(jid=7, pid=p["leader"], cards=("0",)),
            8: JobProcessInfo(jid=8, pid=os.getpid() + 10**8, cards=(nvml.gpus[2].uuid,)),  # no processes
        }
    )
    g0, g1, g2 = monitor.sample().gpus

    assert [(q.pid, q.used_memory, q.jid) for q in g0.processes] == [
        (p["leader"], 1 * GIB, 7),
        (p["child"], 2 * GIB, 7),
    ]
    assert [(q.pid, q.used_memory, q.jid) for q in g1.processes] == [
        (p["escaped"], 3 * GIB, 7),
        (p["orphan"], None, 7),
        (p["unrelated"], 5 * GIB, None),
    ]
    assert [q.jid for q in g2.processes] == [None]
    # which of our jobs run on each GPU: by the card it was given, and by its processes
    assert (g0.jobs, g1.jobs, g2.jobs) == ((7,), (7,), (8,))

    # the job ends: its processes are no longer attributed to it
    monitor.set_jobs({})
    assert all(q.jid is None for g in monitor.sample().gpus for q in g.processes)


def test_background_sampling_calls_back_without_piling_up():
    nvml = FakeNVML([FakeGPU(util=1)])
    monitor = GPUMonitor(nvml=nvml, interval=0.01)
    seen: list[GPUSnapshot] = []
    active = 0
    most = 0
    lock = threading.Lock()
    three = threading.Event()

    def slow_callback(snap):
        nonlocal active, most
        with lock:
            active += 1
            most = max(most, active)
        time.sleep(0.05)  # slower than the interval
        with lock:
            active -= 1
            seen.append(snap)
            if len(seen) >= 3:
                three.set()

    monitor.start(slow_callback)
    assert monitor.running
    with pytest.raises(RuntimeError):
        monitor.start(slow_callback)
    assert three.wait(10)
    monitor.stop()
    assert not monitor.running
    count = len(seen)
    time.sleep(0.1)
    assert len(seen) == count  # really stopped
    assert most == 1  # one sample at a time
    stamps = [s.timestamp for s in seen]
    assert all(b - a >= 0.05 for a, b in zip(stamps, stamps[1:]))  # next one after the last finished
    assert all(s.available and s.gpus[0].utilization == 1.0 for s in seen)


def test_fake_nvml_matches_pynvml():
    """The fake has pynvml's names, values, exception classes and messages."""
    import pynvml

    for name in FUNCTIONS:
        assert callable(getattr(pynvml, name, None)), f"pynvml has no {name}"
    assert issubclass(pynvml.NVMLLibraryMismatchError, Exception)
    assert not issubclass(pynvml.NVMLLibraryMismatchError, pynvml.NVMLError)
    for name, value in CONSTANTS.items():
        assert getattr(pynvml, name) == value, name
    fake = FakeNVML()
    for name, klass in ERROR_CLASSES.items():
        real = getattr(pynvml, name)
        assert issubclass(real, pynvml.NVMLError)
        assert real().value == klass().value, name
        assert type(pynvml.NVMLError(klass().value)).__name__ == name
        assert type(fake.NVMLError(klass().value)).__name__ == name
        assert str(real()) == str(klass()), name
        assert isinstance(klass(), fake.NVMLError)
