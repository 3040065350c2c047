"""A job: one run of the user's script on one parameter set, and the `#Auptimizer:` protocol."""

from __future__ import annotations

import json
import math
import os
import shlex
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError, JobError
from .status import JobStatus, advance

RESULT_PREFIX = "#Auptimizer:"


class ResultParseError(JobError):
    pass


class NonFiniteResultError(ResultParseError):
    """A result line whose values parse but are not finite (inf, -inf, nan, 1e309)."""

    def __init__(self, value: str, line: str, index: int = 0):
        self.value, self.line, self.index = value, line, index
        what = "score" if index == 0 else f"value {index + 1}"
        self.detail = f"a non-finite {what} {value!r} in {line!r}"
        super().__init__(f"{self.detail}: a result must be a finite number")

    def for_job(self, jid: int | None) -> str:
        """The message naming the job: `job 3 reported a non-finite score 'inf' in '#Auptimizer:inf'`."""
        return f"job {jid} reported {self.detail}; a result must be a finite number"


def _shown(text: str) -> str:
    return text if len(text) <= 200 else text[:200] + "…"


def _finite_values(body: str, line: str) -> tuple[float, ...]:
    """The comma-separated numbers of `body`; NonFiniteResultError for inf/nan/overflow (ValueError
    for text that is no number at all)."""
    parts = body.split(",")
    values = tuple(float(v) for v in parts)
    for index, value in enumerate(values):
        if not math.isfinite(value):
            raise NonFiniteResultError(parts[index].strip(), _shown(line), index)
    return values


def parse_result_line(line: str) -> tuple[float, ...] | None:
    """The values of a `#Auptimizer:<v>[,<v2>…]` line; None for any other line.

    A result line whose values are not numbers raises ResultParseError quoting the line; one
    with a non-finite value (inf, nan, 1e309) raises NonFiniteResultError: JSON cannot carry
    it and no best score can be decided with it.
    """
    text = line.strip()
    if not text.startswith(RESULT_PREFIX):
        return None
    body = text[len(RESULT_PREFIX) :].strip()
    try:
        return _finite_values(body, text)
    except NonFiniteResultError:
        raise
    except ValueError:
        raise ResultParseError(
            f"bad result line {_shown(text)!r}: expected {RESULT_PREFIX}<number>[,<number>…]"
        ) from None


def parse_pasted_output(text: str) -> list[tuple[float, ...]]:
    """Results from what a person pasted for a passive job: the command's output or a bare number.

    Returns every result in order (the last is the score). Raises ResultParseError saying what
    was expected when the text holds neither.
    """
    stripped = text.strip()
    if not stripped:
        raise ResultParseError(
            f"nothing pasted: paste the job's output (lines starting with {RESULT_PREFIX}) or type its score"
        )
    try:
        return [_finite_values(stripped, stripped)]
    except NonFiniteResultError as exc:
        raise ResultParseError(
            f"the score {exc.value!r} is not a finite number: type a number like 0.93"
        ) from None
    except ValueError:
        pass
    results = [r for r in (parse_result_line(line) for line in stripped.splitlines()) if r is not None]
    if not results:
        raise ResultParseError(
            f"no result found: the output must contain a line like '{RESULT_PREFIX}0.93', "
            "or type the score as a bare number"
        )
    return results


def log_relpath(jid: int | str | None, attempt: int | str) -> str:
    """Where attempt `attempt` of job `jid` writes its combined output, relative to the working
    folder: `jobs/<jid>.<attempt>.out` (the one place this name is made)."""
    return os.path.join("jobs", f"{jid}.{attempt}.out")


def passive_command(workingdir: str, script: str, jid: int | None) -> str:
    """The command a person runs by hand for passive job `jid`: from the working folder, the
    script (relative to it unless absolute) with the job's config as its argument."""
    script = os.path.expanduser(script)
    script_path = os.path.normpath(os.path.join(workingdir, script))
    shown = script_path if os.path.isabs(script) else os.path.relpath(script_path, workingdir)
    if not shown.startswith((".", "/")):
        shown = "./" + shown
    return f"cd {shlex.quote(workingdir)} && {shlex.quote(shown)} jobs/{jid}.json"


def json_safe(value: Any) -> Any:
    """`value` with every non-finite float (from records written before results had to be
    finite) replaced by None, so that `json.dumps(..., allow_nan=False)` gives strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


_KINDS = {list: "a list", tuple: "a list", dict: "an object", float: "a non-finite number"}


def env_strings(env: Any, where: str = "runtime_args.env") -> dict[str, str]:
    """A job's extra environment as strings: numbers and booleans become their JSON text
    (`1`, `0.5`, `true`); anything else (null, lists, objects) is a ConfigError naming the key."""
    if env is None:
        return {}
    if not isinstance(env, dict):
        raise ConfigError(
            f"{where} must be an object of variable names to values, "
            f'like {{"OMP_NUM_THREADS": "1"}}, not {type(env).__name__}'
        )
    out: dict[str, str] = {}
    for name, value in env.items():
        if not isinstance(name, str) or not name or "=" in name or "\0" in name:
            raise ConfigError(
                f"{where} has the variable name {name!r}, which is not a valid environment "
                "variable name: use letters, digits and '_'"
            )
        text: str | None = None
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int) or (isinstance(value, float) and math.isfinite(value)):
            text = json.dumps(value)
        elif isinstance(value, str) and "\0" not in value:
            text = value
        if text is None:
            shown = (
                "null"
                if value is None
                else "a text with a NUL byte"
                if isinstance(value, str)
                else f"{_KINDS.get(type(value), 'a ' + type(value).__name__)} "
                f"({_shown(json.dumps(value, default=str))})"
            )
            raise ConfigError(
                f"{where}.{name} must be a string or a number, not {shown}: "
                f'write it as text, e.g. "{name}": "…"'
            )
        out[str(name)] = text
    return out


@dataclass
class Job:
    """A job as Auptimizer's `Job(script, config, path='.', retries=3)`.

    `path` is the experiment's working folder, made absolute when the job is made (as Auptimizer
    does: a job started from another folder still finds it); the config is written to
    `jobs/<jid>.json` there and each attempt's combined output goes to `jobs/<jid>.<attempt>.out`.
    The best job's re-run that saves its models (`save_model` in its config) uses
    `jobs/best_job_<eid>.json` and `jobs/best_job_<eid>.out`, as Auptimizer names them.
    """

    script: str
    config: dict[str, Any]
    path: str = "."
    retries: int = 3
    jid: int | None = None
    eid: int | None = None
    attempt: int = 0
    rid: int | None = None
    results: list[tuple[float, ...]] = field(default_factory=list)
    retryable: bool = True  # False when a failure must not be retried (a person said it failed)
    #: the prescript's exit status when it failed this attempt (the script then did not run)
    prescript_status: int | None = None
    #: why the current attempt failed (None while it has not)
    error: str | None = None
    #: changed only through `move_to`, which refuses a move the status model does not allow
    status: JobStatus = JobStatus.QUEUED

    def __post_init__(self) -> None:
        self.path = os.path.abspath(os.path.expanduser(self.path))

    def move_to(self, status: JobStatus) -> None:
        """Change the status; IllegalTransition for a move `JobStatus` does not allow."""
        self.status = advance(JobStatus(self.status), JobStatus(status))

    @property
    def save_model_flag(self) -> bool:
        """True for the best job's re-run that saves its models (`save_model: true` in its config)."""
        return isinstance(self.config, dict) and self.config.get("save_model") is True

    @property
    def script_path(self) -> str:
        """The script as the job runs it: relative to the working folder unless absolute."""
        return os.path.normpath(os.path.join(self.path, os.path.expanduser(self.script)))

    @property
    def config_path(self) -> str:
        if self.save_model_flag and self.eid is not None:
            return os.path.join(self.path, "jobs", f"best_job_{self.eid}.json")
        return os.path.join(self.path, "jobs", f"{self.jid}.json")

    def log_path(self, attempt: int | None = None) -> str:
        if self.save_model_flag and self.eid is not None:
            return os.path.join(self.path, "jobs", f"best_job_{self.eid}.out")
        return os.path.join(self.path, log_relpath(self.jid, attempt or self.attempt))

    @property
    def command(self) -> list[str]:
        return [self.script_path, self.config_path]

    @property
    def shell_command(self) -> str:
        """The command a person runs by hand (passive jobs), from the working folder."""
        return passive_command(self.path, self.script, self.jid)

    def verify_local(self) -> bool:
        """Check the job can run here: True, or JobError (an EnvironmentError, as Auptimizer
        raises) saying what to do."""
        if not os.path.isdir(self.path):
            if os.path.exists(self.path):
                raise JobError(f"working folder {self.path} is a file, not a folder: fix 'workingdir'")
            raise JobError(f"working folder {self.path} does not exist: create it or fix 'workingdir'")
        jobs_dir = os.path.dirname(self.config_path)
        if os.path.exists(jobs_dir) and not os.path.isdir(jobs_dir):
            raise JobError(
                f"{jobs_dir} is a file, but jobs keep their configs and logs in that folder: "
                "move the file away"
            )
        script = self.script_path
        if not os.path.exists(script):
            raise JobError(
                f"job script {script} not found: fix 'script' (relative to 'workingdir' {self.path})"
            )
        if os.path.isdir(script):
            raise JobError(f"job script {script} is a folder, not a script: fix 'script'")
        if not os.access(script, os.X_OK):
            raise JobError(f"job script {script} is not executable: run `chmod +x {shlex.quote(script)}`")
        return True

    def write_config(self) -> str:
        """Write the parameters to `jobs/<jid>.json` (the job's only argument); returns its path."""
        path = self.config_path
        payload = memoryview(json.dumps({**self.config, "job_id": self.jid}).encode())
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC  # no file object: on every job's path
        try:
            fd = os.open(path, flags, 0o666)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(path, flags, 0o666)
        try:
            while payload:
                payload = payload[os.write(fd, payload) :]
        finally:
            os.close(fd)
        return path
