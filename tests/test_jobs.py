"""The job protocol: `#Auptimizer:` lines, pasted passive output, and local checks before a run."""

from __future__ import annotations

import os

import pytest
from aup_tui_backends.jobs import (
    Job,
    JobError,
    NonFiniteResultError,
    ResultParseError,
    json_safe,
    parse_pasted_output,
    parse_result_line,
)
from helpers import write_script


def test_result_lines():
    assert parse_result_line("#Auptimizer:0.91") == (0.91,)
    assert parse_result_line("  #Auptimizer: 0.91, 12.5 \n") == (0.91, 12.5)
    assert parse_result_line("epoch 3 loss 0.2") is None


def test_bad_result_line_quotes_the_line():
    with pytest.raises(ResultParseError, match=r"'#Auptimizer:abc'.*#Auptimizer:<number>"):
        parse_result_line("#Auptimizer:abc")


def test_pasted_output_multi_line_and_bare_number():
    text = "loading\n#Auptimizer:0.5\nepoch 2\n#Auptimizer:0.7,3\ndone\n"
    assert parse_pasted_output(text) == [(0.5,), (0.7, 3.0)]
    assert parse_pasted_output(" 0.93 \n") == [(0.93,)]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", "nothing pasted"),
        ("hello world", "no result found"),
        ("#Auptimizer:oops", "bad result line"),
    ],
)
def test_pasted_garbage_says_what_was_expected(text, expected):
    with pytest.raises(ResultParseError, match=expected):
        parse_pasted_output(text)


def test_verify_local_names_the_problem_and_the_fix(tmp_path):
    with pytest.raises(JobError, match="working folder .* does not exist"):
        Job("./job.sh", {}, path=str(tmp_path / "nope")).verify_local()
    with pytest.raises(JobError, match="job script .*job.sh not found"):
        Job("./job.sh", {}, path=str(tmp_path)).verify_local()
    script = write_script(tmp_path, "job.sh", "echo hi")
    os.chmod(script, 0o644)
    with pytest.raises(JobError, match=r"not executable: run `chmod \+x .*job.sh`"):
        Job("./job.sh", {}, path=str(tmp_path)).verify_local()
    os.chmod(script, 0o755)
    Job("./job.sh", {}, path=str(tmp_path)).verify_local()


def test_config_and_log_files_follow_auptimizer_layout(tmp_path):
    job = Job("job.sh", {"x": 1.5}, path=str(tmp_path))
    job.jid, job.attempt = 12, 2
    path = job.write_config()
    assert path == str(tmp_path / "jobs" / "12.json")
    assert job.log_path() == str(tmp_path / "jobs" / "12.2.out")
    assert job.command == [str(tmp_path / "job.sh"), path]
    assert job.shell_command.endswith("./job.sh jobs/12.json")


@pytest.mark.parametrize(
    "line, shown, what",
    [
        ("#Auptimizer:inf", "inf", "score"),
        ("#Auptimizer:-inf", "-inf", "score"),
        ("#Auptimizer:nan", "nan", "score"),
        ("#Auptimizer:1e309", "1e309", "score"),
        ("#Auptimizer:0.5, Infinity", "Infinity", "value 2"),
    ],
)
def test_non_finite_results_are_refused_with_the_job_named(line, shown, what):
    with pytest.raises(NonFiniteResultError) as info:
        parse_result_line(line)
    assert (
        info.value.for_job(3) == f"job 3 reported a non-finite {what} '{shown}' in '{line}'; "
        "a result must be a finite number"
    )


@pytest.mark.parametrize("text", ["inf", "nan", "1e309", "#Auptimizer:inf"])
def test_pasted_non_finite_scores_are_refused(text):
    with pytest.raises(ResultParseError, match="finite"):
        parse_pasted_output(text)


def test_json_safe_turns_non_finite_floats_into_null():
    import json

    value = {"score": float("inf"), "jobs": [{"score": float("nan"), "values": (1.0, float("-inf"))}], "n": 2}
    assert (
        json.dumps(json_safe(value), allow_nan=False)
        == '{"score": null, "jobs": [{"score": null, "values": [1.0, null]}], "n": 2}'
    )
