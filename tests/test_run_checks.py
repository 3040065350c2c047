"""What `init` and the start of a run refuse or warn about, as a person sees it: an existing
env.ini kept unless --overwrite, placeholder hosts refused, an experiment no resource can run
refused by the engine itself (library users too), a GPU experiment on cards NVML does not see
warned about once (headless and TUI), and one best job when scores tie, whatever order the
engine's threads publish their events in.

Real processes and stores; NVML is the fake of tests/fake_nvml.py, put where `import pynvml`
finds it (sys.modules in-process, a shim module on PYTHONPATH for a real `aup-tui` process)."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from aup_tui_backends.config import load_experiment
from aup_tui_backends.errors import AupError, ConfigError
from aup_tui_backends.events import EventBus, JobFinished, JobStarted
from aup_tui_backends.experiment import Experiment
from aup_tui_backends.setup import init_aup
from aup_tui_backends.store import TinyDBConnector
from fake_nvml import FakeGPU, FakeNVML
from helpers import ROOT, write_experiment, write_script

DEADLINE = 30.0
TESTS = Path(__file__).resolve().parent


def aup(
    *args: str, cwd: Path, extra_path: Path | None = None, env: dict | None = None
) -> subprocess.CompletedProcess:
    """`aup-tui ARGS` as a real process (HOME at `cwd`: no ~/.aup of the machine), bounded."""
    path = os.pathsep.join(str(p) for p in (extra_path, ROOT) if p is not None)
    full = dict(os.environ, PYTHONPATH=path, HOME=str(cwd), **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "aup_tui.cli", *args],
        cwd=cwd,
        env=full,
        text=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=DEADLINE,
        check=False,
    )


def one_line_error(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 1, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr and out.stderr.count("\n") == 1, out.stderr
    return out.stderr.strip()


# --- init: an existing env.ini, placeholder hosts ----------------------------------------------


def test_init_on_an_existing_env_ini_is_refused_and_changes_nothing(tmp_path):
    assert aup("init", "--cpu", "2", "--gpu", "0", cwd=tmp_path).returncode == 0
    ini = tmp_path / ".aup" / "env.ini"
    before, listed = ini.read_bytes(), aup("resources", cwd=tmp_path).stdout
    error = one_line_error(aup("init", "--passive", cwd=tmp_path))
    assert error == (
        f"aup-tui: {ini} already exists: nothing changed — add --overwrite to replace it and its "
        "resource list (give every resource you want), or edit it"
    )
    assert ini.read_bytes() == before and aup("resources", cwd=tmp_path).stdout == listed
    # --overwrite replaces the file and the resource list
    assert aup("init", "--overwrite", "--passive", cwd=tmp_path).returncode == 0
    out = aup("resources", cwd=tmp_path).stdout
    assert " passive " in out and " cpu " not in out and " gpu " not in out
    assert "n_cpu" not in ini.read_text() and "gpu_mapping" not in ini.read_text()


def test_init_overwrite_mends_a_damaged_env_ini(tmp_path):
    (tmp_path / ".aup").mkdir()
    (tmp_path / ".aup" / "env.ini").write_text('[Auptimizer]\ngpu_mapping = {"1":\n')
    assert "already exists" in one_line_error(aup("init", "--cpu", "1", cwd=tmp_path))
    assert aup("init", "--overwrite", "--cpu", "1", cwd=tmp_path).returncode == 0
    assert aup("resources", cwd=tmp_path).stdout.count(" cpu ") == 1


def test_the_advice_of_an_empty_init_works_as_typed(tmp_path):
    """`init` with no resource, then the advice `init` and `resources` print: it runs, as given."""
    made = aup("init", cwd=tmp_path)
    assert (
        made.returncode == 0 and "no resources (add some: `aup-tui init --overwrite --cpu N`" in made.stdout
    )
    listed = aup("resources", cwd=tmp_path).stdout
    advice = listed.split("`")[1].split()
    assert advice[:3] == ["aup-tui", "init", "--overwrite"], listed
    assert aup(*advice[1:], cwd=tmp_path).returncode == 0
    assert aup("resources", cwd=tmp_path).stdout.count(" cpu ") == 2


@pytest.mark.parametrize("flag", ["--node", "--aws"])
@pytest.mark.parametrize(
    "entry, why",
    [
        ("user@host", "is a placeholder, not a host"),
        ("<user>@<host>", "is a placeholder, not a host"),
        ("alice@<host>:22", "is a placeholder, not a host"),
        ("ubuntu@i-…", "is a placeholder, not a host"),
        ("user@hostname:22 ~/.ssh/id_rsa", "is a placeholder, not a host"),
        ("@10.0.0.5", "bad host"),
        ("alice@", "bad host"),
        ("alice@10.0.0.5:0", "bad host"),
        ("alice@10.0.0.5:70000", "bad host"),
        ("alice@10.0.0.5:ssh", "bad host"),
    ],
)
def test_init_refuses_a_placeholder_or_malformed_host_naming_it(tmp_path, flag, entry, why):
    error = one_line_error(aup("init", "--cpu", "1", flag, f"alice@10.0.0.4,{entry}", cwd=tmp_path))
    assert error.startswith(f"aup-tui: {flag}") and why in error and repr(entry) in error, error
    assert not (tmp_path / ".aup" / "env.ini").exists()  # nothing written, not even the good entry


def test_init_takes_real_hosts_with_ports_and_keys(tmp_path):
    (tmp_path / "nodes.txt").write_text("alice@10.0.0.5:2222 ~/.ssh/id_ed25519\nbob@gpu-box-1  # lab\n")
    assert (
        aup("init", "--node", "nodes.txt", "--aws", "ubuntu@i-0123456789abcdef0", cwd=tmp_path).returncode
        == 0
    )
    out = aup("resources", cwd=tmp_path).stdout
    assert out.count(" node ") == 2 and out.count(" aws ") == 1


# --- the engine refuses what it could never run -------------------------------------------------


def run_bounded(exp: Experiment) -> dict:
    """`exp.run()` in a thread: a run that would wait forever fails the test instead of hanging it."""
    outcome: dict = {}

    def work() -> None:
        try:
            outcome["result"] = exp.run()
        except BaseException as exc:  # noqa: BLE001 — handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(DEADLINE)
    if thread.is_alive():
        exp.stop()
        raise AssertionError("Experiment.run() still waiting: it should have refused at once")
    return outcome


def test_library_run_without_a_resource_of_its_type_raises_the_cli_message(tmp_path):
    init_aup(str(tmp_path / ".aup"), gpu=["0"])
    write_script(tmp_path, "job.sh", 'echo "#Auptimizer:0.5"\n')
    config = load_experiment(write_experiment(tmp_path, n_samples=1))
    connector = TinyDBConnector(str(tmp_path / ".aup"))
    outcome = run_bounded(Experiment(config, auppath=str(tmp_path / ".aup"), connector=connector))
    error = outcome.get("error")
    assert isinstance(error, ConfigError) and isinstance(error, AupError), outcome
    assert str(error) == (
        f"no 'cpu' resource in {tmp_path / '.aup' / 'env.ini'} — add some with "
        f"`aup-tui init --aup {tmp_path / '.aup'} --overwrite --gpu 0 --cpu 4`"
    )
    assert connector.latest_experiment() is None  # nothing recorded, nothing started
    assert not (tmp_path / "jobs").exists()
    connector.close()


@pytest.mark.parametrize("n_parallel", [0, -2])
def test_library_run_with_n_parallel_below_one_is_refused_not_hung(workdir, n_parallel):
    config = dataclasses.replace(
        load_experiment(write_experiment(workdir, n_samples=2)), n_parallel=n_parallel
    )
    connector = TinyDBConnector(str(workdir / ".aup"))
    outcome = run_bounded(Experiment(config, auppath=str(workdir / ".aup"), connector=connector))
    assert (
        str(outcome.get("error")) == f"n_parallel in experiment.json must be a whole number of at least 1, "
        f"got {n_parallel}"
    )
    assert connector.latest_experiment() is None
    connector.close()


def test_library_run_on_an_env_ini_written_by_hand_uses_its_resources(tmp_path):
    """An Auptimizer user's env.ini, never seen by `aup-tui init`: its cpu slots run the jobs."""
    aup_dir = tmp_path / ".aup"
    aup_dir.mkdir()
    (aup_dir / "env.ini").write_text(
        f"[Auptimizer]\nAuptimizer_PATH = {aup_dir}\nSQL_ENGINE = sqlite\nn_cpu = 2\n"
    )
    write_script(tmp_path, "job.sh", 'echo "#Auptimizer:0.5"\n')
    config = load_experiment(write_experiment(tmp_path, n_samples=2))
    outcome = run_bounded(Experiment(config, auppath=str(aup_dir)))
    assert outcome["result"].status == "FINISHED", outcome


# --- a GPU experiment on cards NVML does not see ----------------------------------------------


def gpu_setup(tmp_path: Path, cards: list[str]) -> object:
    init_aup(str(tmp_path / ".aup"), gpu=cards)
    write_script(tmp_path, "job.sh", 'echo "#Auptimizer:0.5"\n')
    return load_experiment(write_experiment(tmp_path, resource="gpu", n_samples=2, n_parallel=len(cards)))


def headless(tmp_path: Path, config) -> str:
    from aup_tui.headless import run_headless

    out = io.StringIO()
    connector = TinyDBConnector(str(tmp_path / ".aup"))
    assert run_headless(config, str(tmp_path / ".aup"), connector, out=out, stdin=io.StringIO("")) == 0
    return out.getvalue()


def test_headless_gpu_run_warns_once_when_nvml_sees_fewer_cards(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", FakeNVML([FakeGPU(name="NVIDIA A100")]))
    text = headless(tmp_path, gpu_setup(tmp_path, ["0", "1"]))
    warning = (
        "warning: gpu_mapping names cards 0,1 but NVML sees 1 GPU (NVIDIA A100): jobs on card 1 will fail"
    )
    assert text.count(warning) == 1, text
    assert text.count("gpu_mapping") == 1


def test_headless_gpu_run_says_why_nvml_cannot_be_used(tmp_path, monkeypatch):
    nvml = FakeNVML([])
    nvml.init_error = nvml.NVMLError_DriverNotLoaded()
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    text = headless(tmp_path, gpu_setup(tmp_path, ["0"]))
    assert (
        text.count(
            "warning: NVML: Driver Not Loaded — cannot check the cards gpu_mapping names (0); "
            "jobs on them may fail"
        )
        == 1
    ), text


def test_headless_gpu_run_on_cards_nvml_sees_says_nothing(tmp_path, monkeypatch):
    nvml = FakeNVML([FakeGPU(), FakeGPU()])
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    text = headless(tmp_path, gpu_setup(tmp_path, ["1", nvml.gpus[0].uuid]))
    assert "warning" not in text and "NVML" not in text, text


def nvml_shim(tmp_path: Path, gpus: int) -> tuple[Path, Path]:
    """A `pynvml` module for a real process: the fake with `gpus` cards; it notes every import."""
    shim, mark = tmp_path / "shim", tmp_path / "pynvml-imported"
    shim.mkdir()
    (shim / "pynvml.py").write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(TESTS)!r})\n"
        f"open({str(mark)!r}, 'a').write('imported\\n')\n"
        "from fake_nvml import FakeGPU, FakeNVML\n"
        f"sys.modules[__name__] = FakeNVML([FakeGPU(name='NVIDIA T4') for _ in range({gpus})])\n"
    )
    return shim, mark


def test_cli_gpu_run_warns_and_help_or_cpu_runs_never_load_nvml(tmp_path):
    shim, mark = nvml_shim(tmp_path, gpus=2)
    assert aup("--help", cwd=tmp_path, extra_path=shim).returncode == 0
    assert aup("init", "--cpu", "1", "--gpu", "0,3,5", cwd=tmp_path, extra_path=shim).returncode == 0
    write_script(tmp_path, "job.sh", 'echo "#Auptimizer:0.5"\n')
    write_experiment(tmp_path, n_samples=1, n_parallel=1)
    assert aup("run", "--headless", "experiment.json", cwd=tmp_path, extra_path=shim).returncode == 0
    assert not mark.exists(), "pynvml imported by --help, init or a cpu run"
    write_experiment(tmp_path, n_samples=3, n_parallel=3, resource="gpu")
    out = aup("run", "--headless", "experiment.json", cwd=tmp_path, extra_path=shim)
    assert out.returncode == 0, out.stderr
    assert (
        out.stderr.count(
            "warning: gpu_mapping names cards 0,3,5 but NVML sees 2 GPUs (NVIDIA T4): "
            "jobs on cards 3,5 will fail\n"
        )
        == 1
    ), out.stderr


async def test_tui_gpu_run_shows_the_warning(tmp_path, monkeypatch):
    from aup_tui.app import AupApp

    monkeypatch.setitem(sys.modules, "pynvml", FakeNVML([FakeGPU(name="NVIDIA A100")]))
    config = gpu_setup(tmp_path, ["0", "1"])
    app = AupApp(str(tmp_path / ".aup"), connector=TinyDBConnector(str(tmp_path / ".aup")), experiment=config)
    want = "gpu_mapping names cards 0,1 but NVML sees 1 GPU (NVIDIA A100): jobs on card 1 will fail"
    try:
        async with app.run_test(size=(120, 30), notifications=True) as pilot:
            deadline = time.monotonic() + DEADLINE
            while not any(want in str(t.render()) for t in app.screen.query("Toast")):
                assert time.monotonic() < deadline, [str(t.render()) for t in app.screen.query("Toast")]
                await pilot.pause(0.05)
            assert [n.severity for n in app._notifications if want in n.message] == ["warning"]
    finally:
        if app.experiment is not None:
            app.experiment.stop()
            app.exp_thread.join(15)


# --- ties: the event carries the end the store recorded -----------------------------------------


def test_tied_jobs_whose_events_cross_name_the_stores_best_in_progress_and_summary(tmp_path, monkeypatch):
    """Job A (x=1) is recorded FINISHED first, but its thread is held until job B's (x=2, same
    score, recorded later) JobFinished is out: the progress line must still name A, as the store
    and the summary do, because the tie rule reads the recorded end, not when an event was made."""
    init_aup(str(tmp_path / ".aup"), cpu=2)
    gate = tmp_path / "a-recorded"
    write_script(
        tmp_path,
        "job.sh",
        f"""
        if grep -q '"x": 2' "$1"; then
            i=0
            while [ ! -e {gate} ] && [ $i -lt 2000 ]; do sleep 0.01; i=$((i+1)); done
        fi
        echo "#Auptimizer:0.5"
    """,
    )
    config = load_experiment(
        write_experiment(
            tmp_path,
            proposer="sequence",
            n_parallel=2,
            n_samples=2,
            parameter_config=[{"name": "x", "type": "int", "range": [1, 2]}],
        )
    )
    held: list[int] = []
    b_out = threading.Event()

    class HoldFirst(TinyDBConnector):
        def end_job(self, eid, jid, score, status, **kw):
            end = super().end_job(eid, jid, score, status, **kw)
            if status == "FINISHED" and not held:
                held.append(jid)
                gate.touch()
                b_out.wait(DEADLINE)  # bounded: the assertion below says if it never came
            return end

    publish = EventBus.publish

    def spy(self, event):
        publish(self, event)
        if isinstance(event, JobFinished) and held and event.jid != held[0]:
            b_out.set()

    monkeypatch.setattr(EventBus, "publish", spy)
    from aup_tui.headless import run_headless

    out = io.StringIO()
    connector = HoldFirst(str(tmp_path / ".aup"))
    assert run_headless(config, str(tmp_path / ".aup"), connector, out=out, stdin=io.StringIO("")) == 0
    assert b_out.is_set(), "job B's event never came while job A's was held"
    first = held[0]
    jobs = {j["jid"]: j for j in TinyDBConnector(str(tmp_path / ".aup")).jobs(1)}
    assert jobs[first]["config"]["x"] == 1 and jobs[first]["end"] < min(
        j["end"] for j in jobs.values() if j["jid"] != first
    )
    text = out.getvalue()
    progress = [line for line in text.splitlines() if "2/2" in line][-1]
    assert f"best 0.5 (job {first})" in progress, text
    assert f"best job {first}: score 0.5" in text


def test_tui_best_job_on_a_tie_is_the_first_recorded_not_the_first_event(tmp_path):
    from aup_tui.state import ExperimentState
    from aup_tui.widgets.header import ExperimentHeader  # noqa: F401 — the header reads best_jid

    state = ExperimentState(eid=1, name="tie", status="RUNNING", n_samples=2, target="min")
    state.apply(
        [
            JobStarted(eid=1, jid=7, rid=1, resource="cpu0", attempt=1),
            JobStarted(eid=1, jid=9, rid=2, resource="cpu1", attempt=1),
            # job 9 was recorded later (end 200.0) but its event came out first
            JobFinished(eid=1, jid=9, score=0.5, end=200.0, time=50.0),
            JobFinished(eid=1, jid=7, score=0.5, end=100.0, time=60.0),
        ]
    )
    assert (state.best_jid, state.best_score) == (7, 0.5)
    assert state.jobs[7].end == 100.0  # the table shows the recorded end too
    # the store's snapshot (watch mode) agrees
    later = ExperimentState(eid=1)
    later.merge_store(
        {"eid": 1, "name": "tie", "status": "RUNNING", "n_samples": 2, "target": "min"},
        [
            {"jid": 9, "status": "FINISHED", "score": 0.5, "end": 200.0, "config": {"x": 2}},
            {"jid": 7, "status": "FINISHED", "score": 0.5, "end": 100.0, "config": {"x": 1}},
        ],
    )
    assert later.best_jid == 7


def test_end_job_returns_the_end_that_status_uses(tmp_path):
    """The end `end_job` hands to the event is the one the store's rule (`status --json`) reads."""
    auppath = str(tmp_path / ".aup")
    init_aup(auppath, cpu=1)
    conn = TinyDBConnector(auppath)
    eid = conn.start_experiment("me", "tie", {}, n_samples=2, target="max", workingdir=str(tmp_path))
    a, b = conn.new_jid(), conn.new_jid()
    for jid in (b, a):
        conn.start_job(eid, jid, {"x": jid}, 1, "cpu0", 1)
    end_b = conn.end_job(eid, b, 0.5, "FINISHED", values=[0.5])  # b recorded first
    end_a = conn.end_job(eid, a, 0.5, "FINISHED", values=[0.5])
    assert (
        isinstance(end_b, float)
        and end_a == conn.get_job(a, eid)["end"]
        and end_b == conn.get_job(b, eid)["end"]
    )
    conn.end_experiment(eid, "FINISHED")
    conn.close()
    st = json.loads(aup("status", "--json", cwd=tmp_path).stdout)
    assert st["best"]["jid"] == (b if end_b < end_a else a)  # the first recorded (then the lower jid)
