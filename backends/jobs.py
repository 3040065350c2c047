"""A job: one run of the user's script on one parameter set, and the `#Auptimizer:` protocol."""

from __future__ import annotations

import json
import math
import os
import shlex
from dataclasses import dataclass, field

from .errors import AupError

RESULT_PREFIX = "#Auptimizer:"


class JobError(AupError):
    """A job cannot start or its output breaks the protocol (the message says which and why)."""


class ResultParseError(JobError):
    pass


def parse_result_line(line: str) -> tuple[float, ...] | None:
    """The values of a `#Auptimizer:<v>[,<v2>…]` line; None for any other line.

    A result line whose values are not numbers raises ResultParseError quoting the line.
    """
    text = line.strip()
    if not text.startswith(RESULT_PREFIX):
        return None
    body = text[len(RESULT_PREFIX):].strip()
    try:
        values = tuple(float(v) for v in body.split(","))
    except ValueError:
        shown = text if len(text) <= 200 else text[:200] + "…"
        raise ResultParseError(
            f"bad result line {shown!r}: expected {RESULT_PREFIX}<number>[,<number>…]"
        ) from None
    if any(math.isnan(v) for v in values[:1]):
        raise ResultParseError(f"bad result line {text!r}: the score is NaN")
    return values


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
        values = tuple(float(v) for v in stripped.split(","))
        if not any(math.isnan(v) for v in values):
            return [values]
    except ValueError:
        pass
    results = [r for r in (parse_result_line(line) for line in stripped.splitlines()) if r is not None]
    if not results:
        raise ResultParseError(
            f"no result found: the output must contain a line like '{RESULT_PREFIX}0.93', "
            "or type the score as a bare number"
        )
    return results


@dataclass
class Job:
    """A job as Auptimizer's `Job(script, config, path='.', retries=3)`.

    `path` is the experiment's working folder; the config is written to `jobs/<jid>.json` there
    and each attempt's combined output goes to `jobs/<jid>.<attempt>.out`.
    """

    script: str
    config: dict
    path: str = "."
    retries: int = 3
    jid: int | None = None
    eid: int | None = None
    attempt: int = 0
    rid: int | None = None
    results: list[tuple[float, ...]] = field(default_factory=list)
    retryable: bool = True  # False when a failure must not be retried (a person said it failed)

    @property
    def script_path(self) -> str:
        """The script as the job runs it: relative to the working folder unless absolute."""
        return os.path.normpath(os.path.join(self.path, os.path.expanduser(self.script)))

    @property
    def config_path(self) -> str:
        return os.path.join(self.path, "jobs", f"{self.jid}.json")

    def log_path(self, attempt: int | None = None) -> str:
        return os.path.join(self.path, "jobs", f"{self.jid}.{attempt or self.attempt}.out")

    @property
    def command(self) -> list[str]:
        return [self.script_path, self.config_path]

    @property
    def shell_command(self) -> str:
        """The command a person runs by hand (passive jobs), from the working folder."""
        rel_script = os.path.relpath(self.script_path, self.path)
        if not rel_script.startswith((".", "/")):
            rel_script = "./" + rel_script
        return f"cd {shlex.quote(self.path)} && {shlex.quote(rel_script)} jobs/{self.jid}.json"

    def verify_local(self) -> None:
        """Check the job can run here; raise JobError with what to do when it cannot."""
        if not os.path.isdir(self.path):
            raise JobError(f"working folder {self.path} does not exist: create it or fix 'workingdir'")
        script = self.script_path
        if not os.path.exists(script):
            raise JobError(f"job script {script} not found: fix 'script' (relative to 'workingdir' {self.path})")
        if os.path.isdir(script):
            raise JobError(f"job script {script} is a folder, not a script: fix 'script'")
        if not os.access(script, os.X_OK):
            raise JobError(f"job script {script} is not executable: run `chmod +x {shlex.quote(script)}`")

    def write_config(self) -> str:
        """Write the parameters to `jobs/<jid>.json` (the job's only argument); returns its path."""
        path = self.config_path
        payload = json.dumps({**self.config, "job_id": self.jid})
        try:
            f = open(path, "w")
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            f = open(path, "w")
        with f:
            f.write(payload)
        return path
