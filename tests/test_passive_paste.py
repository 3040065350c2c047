"""A submit acts on exactly the text on screen, however fast the input came: a paste, keys and the
submit key arriving in one burst (as from tmux `paste-buffer -p` + `send-keys C-s`, or a fast
typist) must record the last line's score — in the TUI form and at the headless prompt."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import time

import pytest
from helpers import cli, cli_popen, write_experiment, write_script
from screens_support import Host, passive_experiment, wait_until
from textual import events
from textual.keys import _character_to_key

from aup_tui.screens.passive_form import PassiveForm, PassiveRequest, PasteArea

PASTED = "log line\n#Auptimizer:0.75\n"
TYPED = "#Auptimizer:0.125"
ROUNDS = 20


def key_event(char: str) -> events.Key:
    key = char if char.isalnum() else _character_to_key(char)
    return events.Key(key, char)


def burst(app, paste: str, typed: str, submit: str | None = "ctrl+s") -> None:
    """Queue a paste, typed keys and the submit key at once, with no pause for the app to catch up."""
    app.post_message(events.Paste(paste))
    for char in typed:
        app.post_message(key_event(char))
    if submit:
        app.post_message(events.Key(submit, None))


@pytest.fixture
def run(tmp_path):
    experiment = passive_experiment(tmp_path, n_samples=ROUNDS)
    yield experiment
    experiment.close()


async def answer_in_one_burst(run, send) -> tuple[int, list]:
    """Open the form of the next waiting job, `send(app, form)` without pauses, wait for the result."""
    request = PassiveRequest.from_event(run.next_request())
    app = Host(lambda: PassiveForm(request, submit=run.rm.submit_result, mark_failed=run.rm.mark_failed))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, PassiveForm))
        await pilot.pause()
        form = app.screen
        area, error = form.query_one("#passive-output", PasteArea), form.query_one("#passive-error")
        assert form.focused is area
        send(app, form)
        await wait_until(pilot, lambda: app.dismissed or error.has_class("-visible"))
        shown = area.text
        assert app.dismissed == ["submitted"], str(error.render())
    assert shown == PASTED + TYPED  # what the person saw is what was submitted
    return request.jid, app.dismissed


async def test_paste_keys_and_ctrl_s_in_one_burst_record_the_last_line(run) -> None:
    for _ in range(ROUNDS):
        jid, _ = await answer_in_one_burst(run, lambda app, form: burst(app, PASTED, TYPED))
        job = run.wait_job(jid, ("FINISHED",))
        assert job["score"] == pytest.approx(0.125)
        values = [r["values"][0] for r in run.connector.intermediate_results(run.eid, jid)]
        assert values == pytest.approx([0.75, 0.125])


async def test_submit_button_waits_for_a_paste_still_queued(run) -> None:
    """The button (and the palette) submit only once the text area applied what it had queued."""

    def send(app, form) -> None:
        burst(app, PASTED, TYPED, submit=None)
        app.call_later(form.action_submit)  # behind the paste and keys in the app's queue, as a click is

    for _ in range(3):
        jid, _ = await answer_in_one_burst(run, send)
        assert run.wait_job(jid, ("FINISHED",))["score"] == pytest.approx(0.125)


def test_submit_key_is_not_a_priority_binding() -> None:
    """A priority binding runs as the app reads the key, before queued keys reach the text area."""
    submit = next(b for b in PassiveForm.BINDINGS if b.action == "submit")
    assert submit.key == "ctrl+s" and not submit.priority


# -- the headless prompt: lines arrive as fast as a pipe or a terminal paste gives them ---------


def passive_cli_setup(tmp_path, n_samples: int = 2) -> None:
    assert cli("init", "--passive", cwd=tmp_path).returncode == 0
    write_script(tmp_path, "job.sh", "echo '#Auptimizer:1'")
    write_experiment(tmp_path, resource="passive", n_samples=n_samples, target="min")


def scores(tmp_path) -> list:
    out = cli("status", "--json", cwd=tmp_path)
    return [j["score"] for j in json.loads(out.stdout)["jobs"]]


def test_headless_answer_uses_every_line_before_the_empty_line(tmp_path) -> None:
    passive_cli_setup(tmp_path, n_samples=3)
    answer = PASTED + TYPED + "\n\n"
    out = cli("run", "--headless", "experiment.json", cwd=tmp_path, input=answer * 3)
    assert out.returncode == 0, out.stderr
    assert scores(tmp_path) == [0.125, 0.125, 0.125]


def test_headless_end_of_input_submits_the_lines_before_it(tmp_path) -> None:
    """No empty line after the last answer (a file or paste that ends there): end of input submits."""
    passive_cli_setup(tmp_path, n_samples=2)
    out = cli(
        "run", "--headless", "experiment.json", cwd=tmp_path, input=PASTED + TYPED + "\n\n" + PASTED + TYPED
    )
    assert out.returncode == 0, out.stderr
    assert scores(tmp_path) == [0.125, 0.125]


def test_headless_a_log_line_starting_with_fail_is_output_not_a_verdict(tmp_path) -> None:
    passive_cli_setup(tmp_path, n_samples=2)
    answers = "Failed to load the cache, recomputing\n" + TYPED + "\n\nfail: out of memory\n"
    write_experiment(
        tmp_path, resource="passive", n_samples=2, target="min", job_failure={"ignore_fail": True}
    )
    out = cli("run", "--headless", "experiment.json", cwd=tmp_path, input=answers)
    assert out.returncode == 0, out.stderr
    jobs = json.loads(cli("status", "--json", cwd=tmp_path).stdout)["jobs"]
    assert [(j["status"], j["score"]) for j in jobs] == [("FINISHED", 0.125), ("FAILED", None)]


def test_headless_paste_into_a_terminal_in_one_write(tmp_path) -> None:
    """A terminal (pty) that receives the whole paste and the empty line in one write."""
    passive_cli_setup(tmp_path, n_samples=1)
    master, slave = pty.openpty()
    proc = cli_popen(
        "run",
        "--headless",
        "experiment.json",
        cwd=tmp_path,
        stdin=slave,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    os.close(slave)
    try:
        deadline = time.monotonic() + 20
        while not (tmp_path / "jobs" / "1.json").exists():  # the job waits once its config is written
            assert time.monotonic() < deadline and proc.poll() is None, "no job waited"
            time.sleep(0.05)
        os.write(master, (PASTED + TYPED + "\n\n").encode())
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert scores(tmp_path) == [0.125]
