"""Shell commands that run a job on a remote node, built with `shlex.quote` everywhere.

Pure functions (no I/O), so the quoting can be checked without a node. Everything a user
controls — paths, the script's name, the config's name, environment values — is quoted;
only `prescript` and `postscript` are shell code by design (they are the user's own commands,
as in Auptimizer).

Files a job leaves in `<workingdir>/jobs/` on the node (next to Auptimizer's `<jid>.json`):

- `<jid>.<attempt>.remote.out`  the job's combined output (the node's copy of the log);
- `<jid>.<attempt>.remote.pid`  the job's process-group id (it runs in its own session);
- `<jid>.<attempt>.remote.rc`   its exit status, written when it ends.

The best job's re-run that saves its models (`save_model`) uses `best_job_<eid>` for `<jid>`
(`best_job_<eid>.json`, `best_job_<eid>.remote.out`, …), as Auptimizer names it.

The local log stays `jobs/<jid>.<attempt>.out`; the remote one has its own name so that a
node whose working folder is the local one (loopback, a shared file system) does not have
two writers on one file.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

q = shlex.quote

PGID_MARK = "@@aup:pgid "
#: exit status of the wrapper when the working folder cannot be entered
EXIT_NO_WORKDIR = 97
#: exit status of the wrapper when the job's environment file is missing on the node
EXIT_NO_ENV = 96
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

#: the line the wrapper prints when the prescript fails (then the job's script does not run)
PRESCRIPT_FAILED = "aup: prescript exited with status "
_PRESCRIPT_FAILED = re.compile(re.escape(PRESCRIPT_FAILED) + r"(\d+)\s*")


def parse_prescript_failure(line: str) -> int | None:
    """The prescript's exit status from the wrapper's `aup: prescript exited with status N` line."""
    if not line.startswith(PRESCRIPT_FAILED):
        return None
    m = _PRESCRIPT_FAILED.fullmatch(line)
    return int(m.group(1)) if m else None


def _prescript_lines(var: str) -> list[str]:
    """Shell lines that run the prescript in `$var` in this shell (its exports and `cd` stay),
    and end the shell with `aup: prescript exited with status N` when it fails — also when it
    calls `exit` or has a syntax error. The line goes to fd 9 (the wrapper's stdout, kept aside
    so a prescript's `exec >file` does not hide it)."""
    mark = f'echo "{PRESCRIPT_FAILED}$aup_rc" >&9'
    return [
        "exec 9>&1",
        f"trap 'aup_rc=$?; trap - EXIT; {mark}; exit $aup_rc' EXIT",
        f'eval "${var}"',
        "aup_rc=$?",
        "trap - EXIT",
        f'if [ "$aup_rc" -ne 0 ]; then {mark}; exit "$aup_rc"; fi',
    ]


#: The local job wrapper when there is a prescript or a postscript:
#: `sh -c LOCAL_WRAPPER aup-job PRESCRIPT POSTSCRIPT SCRIPT CONFIG`.
LOCAL_WRAPPER = (
    "\n".join(
        [
            "aup_pre=$1 aup_post=$2",
            "shift 2",
            'if [ -n "$aup_pre" ]; then',
            *("  " + line for line in _prescript_lines("aup_pre")),
            "fi",
            '"$@" 9>&-',
            "rc=$?",
            'if [ -n "$aup_post" ]; then eval "$aup_post"; fi',
            "exit $rc",
        ]
    )
    + "\n"
)


@dataclass(frozen=True)
class RemoteJobPaths:
    """Where one attempt of a job lives on the node (absolute POSIX paths)."""

    workingdir: str
    script: str  # absolute path of the script on the node
    jid: int
    attempt: int
    #: the files' name instead of the job id: `best_job_<eid>` for the best job's re-run that saves
    #: its models (as Auptimizer names them); its files then carry no attempt number
    stem: str | None = None

    @property
    def jobs_dir(self) -> str:
        return posixpath.join(self.workingdir, "jobs")

    @property
    def config(self) -> str:
        return posixpath.join(self.jobs_dir, f"{self.stem or self.jid}.json")

    @property
    def config_rel(self) -> str:
        return f"jobs/{self.stem or self.jid}.json"

    @property
    def script_rel(self) -> str:
        rel = posixpath.relpath(self.script, self.workingdir)
        return rel if rel.startswith("/") or rel.startswith("../") else "./" + rel

    def _file(self, suffix: str) -> str:
        name = self.stem or f"{self.jid}.{self.attempt}"
        return posixpath.join(self.jobs_dir, f"{name}.remote.{suffix}")

    @property
    def log(self) -> str:
        return self._file("out")

    @property
    def pid(self) -> str:
        return self._file("pid")

    @property
    def rc(self) -> str:
        return self._file("rc")

    @property
    def env(self) -> str:
        """The job's `runtime_args.env` as `export` lines: written 0600 over SFTP, sourced and
        deleted by the job, so the values never appear in a command line (`ps`) on the node."""
        return self._file("env")


def env_exports(env: dict[str, Any] | None) -> list[str]:
    """`export NAME='value'` lines; a name that is not a shell identifier, or a value that is not
    a string, number or boolean, is a ConfigError naming the key."""
    from .jobs import env_strings

    lines = []
    for name, value in env_strings(env).items():
        if not _ENV_NAME.fullmatch(name):
            raise ConfigError(
                f"runtime_args.env has the variable name {name!r}, which is not a valid "
                "environment variable name: use letters, digits and '_'"
            )
        lines.append(f"export {name}={q(value)}")
    return lines


def env_file_text(env: dict[str, Any] | None) -> str:
    """What goes into the job's environment file on the node (see `RemoteJobPaths.env`)."""
    lines = env_exports(env)
    return "\n".join(lines) + "\n" if lines else ""


def job_body(
    paths: RemoteJobPaths,
    env: dict[str, Any] | None = None,
    prescript: str | None = None,
    postscript: str | None = None,
    env_file: str | None = None,
) -> str:
    """`prescript; cd <workingdir>; ./<script> jobs/<jid>.json; postscript`, exiting with the job's status.

    `env` is exported inline (it shows in the node's `ps`: only for what is not secret, like
    AUP_JOB_ID); `env_file`, when given, is sourced and deleted first (`runtime_args.env`).
    A failing prescript ends the job with `aup: prescript exited with status N`; the script
    does not run.
    """
    lines = env_exports(env)
    if env_file:
        f = q(env_file)
        lines.append(
            f'[ -r {f} ] || {{ echo "aup: the job\'s environment file "{f}" is missing" >&2; '
            f"exit {EXIT_NO_ENV}; }}"
        )
        lines.append(f". {f}; rm -f -- {f}")
    if prescript:
        lines.append(f"aup_pre={q(str(prescript))}")
        lines.extend(_prescript_lines("aup_pre"))
    wd = q(paths.workingdir)
    lines.append(
        f'cd -- {wd} || {{ echo "aup: cannot enter the working folder "{wd} >&2; exit {EXIT_NO_WORKDIR}; }}'
    )
    lines.append(f"{q(paths.script_rel)} {q(paths.config_rel)} 9>&-")
    lines.append("rc=$?")
    if postscript:
        lines.append(str(postscript))
    lines.append("exit $rc")
    return "\n".join(lines) + "\n"


# bash when the node has it (prescripts written for Auptimizer often use `source`), else sh
_PICK_SHELL = "S=$(command -v bash 2>/dev/null || echo /bin/sh)"


def sync_command(paths: RemoteJobPaths, body: str) -> str:
    """The command for a job whose output streams back over the SSH channel.

    The first line printed is `@@aup:pgid <pgid>`, then the job's combined output, which is
    also kept in the remote log. The command's exit status is the job's. (Each layer gets the
    next as a quoted argument, so nothing is quoted twice.)

    The job's shell runs in a session (process group) of its own, apart from the wrapper and
    its `tee`: when the job's script exits, what it left in that group is killed, so a
    background child still holding the output pipe cannot keep the command (and the job)
    running; stopping the job kills that group. (Where the node has no `setsid`, the job shares
    the wrapper's group and such a child keeps the command open until it ends.)
    """
    pid, rc = q(paths.pid), q(paths.rc)
    # run by setsid (whose own complaints go to /dev/null): the new group's leader says who it
    # is (on fd 3, around tee), runs the job and exits with its status (128+N for signal N)
    leader = (
        f'exec 2>&4 4>&-; echo "{PGID_MARK}$$" >&3; echo $$ > {pid}; "$0" -c "$1" </dev/null 3>&-; exit $?'
    )
    inner = "\n".join(
        [
            _PICK_SHELL,
            "exec 3>&1",
            "if command -v setsid >/dev/null 2>&1; then",
            # the job has ended: kill what it left in its group, which lets tee see the end of its input
            (
                f'  {{ setsid -w /bin/sh -c {q(leader)} "$S" "$1" 4>&2 2>/dev/null; echo $? > {rc}; '
                f'p=$(cat {pid} 2>/dev/null) && [ "$p" -gt 1 ] && kill -s KILL -- "-$p" 2>/dev/null; }} '
                f"2>&1 | tee -- {q(paths.log)}"
            ),
            "else",
            f'  echo "{PGID_MARK}$$"; echo $$ > {pid}',
            f'  {{ "$S" -c "$1" </dev/null 3>&-; echo $? > {rc}; }} 2>&1 | tee -- {q(paths.log)}',
            "fi",
            f'exit "$(cat {rc} 2>/dev/null || echo 255)"',
        ]
    )
    outer = (
        f"rm -f -- {rc} {pid}; "
        'if command -v setsid >/dev/null 2>&1; then exec setsid -w /bin/sh -c "$1" aup-job "$2"; '
        'else exec /bin/sh -c "$1" aup-job "$2"; fi'
    )
    return f"/bin/sh -c {q(outer)} aup {q(inner)} {q(body)}"


def async_command(paths: RemoteJobPaths, body: str, wait_s: float = 5.0) -> str:
    """The command that starts a job detached (nohup, new session, reparented to init).

    The job writes its output to the remote log and its exit status to the rc file, then what
    its script left in its process group is killed; the command prints `@@aup:pgid <pgid>` once
    the job has started, and returns at once.
    """
    inner = "\n".join(
        [
            f"echo $$ > {q(paths.pid + '.tmp')} && mv -f -- {q(paths.pid + '.tmp')} {q(paths.pid)}",
            _PICK_SHELL,
            f'"$S" -c "$1" > {q(paths.log)} 2>&1 </dev/null',
            f"echo $? > {q(paths.rc + '.tmp')}; mv -f -- {q(paths.rc + '.tmp')} {q(paths.rc)}",
            # the job is over: end what it left behind (this shell is in the group too, and goes last)
            # (without setsid this shell leads no group: no group has its pid, the kill does nothing)
            'kill -s KILL -- "-$$" 2>/dev/null',
        ]
    )
    tries = max(1, int(wait_s / 0.02))
    outer = "\n".join(
        [
            f"rm -f -- {q(paths.rc)} {q(paths.pid)}",
            "cd /",
            'if command -v setsid >/dev/null 2>&1; then nohup setsid /bin/sh -c "$1" aup-job "$2" >/dev/null 2>&1 </dev/null &',
            'else nohup /bin/sh -c "$1" aup-job "$2" >/dev/null 2>&1 </dev/null & fi',
            "i=0",
            f"while [ ! -s {q(paths.pid)} ] && [ $i -lt {tries} ]; do sleep 0.02; i=$((i+1)); done",
            f'[ -s {q(paths.pid)} ] && echo "{PGID_MARK}$(cat {q(paths.pid)})"',
        ]
    )
    return f"/bin/sh -c {q(outer)} aup {q(inner)} {q(body)}"


def _alive_fn(pgid: int) -> str:
    """A shell function `alive`: true while a non-zombie process of the group exists (by `ps`;
    where `ps` cannot list processes, by `kill -0`, which counts zombies too)."""
    return (
        "alive() { out=$(ps -A -o pgid= -o stat= 2>/dev/null); "
        'if [ -n "$out" ]; then '
        f"[ \"$(printf '%s\\n' \"$out\" | awk -v g={pgid} '$1==g && $2 !~ /^Z/ {{n++}} END {{print n+0}}')\" != 0 ]; "
        f"else kill -s 0 -- -{pgid} 2>/dev/null; fi; }}"
    )


def kill_command(pgid: int, grace: float = 2.0) -> str:
    """SIGTERM the process group, SIGKILL it after `grace` s; prints `alive` if anything survived
    (zombies waiting for their parent do not count), else `gone`."""
    pgid = int(pgid)
    if pgid <= 1:
        raise ValueError(f"refusing to signal process group {pgid}")
    tries = max(1, int(grace / 0.05))
    script = "\n".join(
        [
            _alive_fn(pgid),
            f"kill -s TERM -- -{pgid} 2>/dev/null || kill -s TERM {pgid} 2>/dev/null",
            "i=0",
            f"while alive && [ $i -lt {tries} ]; do sleep 0.05; i=$((i+1)); done",
            f"alive && kill -s KILL -- -{pgid} 2>/dev/null",
            "i=0",
            "while alive && [ $i -lt 40 ]; do sleep 0.05; i=$((i+1)); done",
            "if alive; then echo alive; else echo gone; fi",
        ]
    )
    return "/bin/sh -c " + q(script)


def alive_command(pgid: int) -> str:
    """Prints `alive` while a (non-zombie) process of the group exists, else `gone`."""
    pgid = int(pgid)
    return "/bin/sh -c " + q(_alive_fn(pgid) + "\nif alive; then echo alive; else echo gone; fi")


def parse_pgid(line: str) -> int | None:
    if line.startswith(PGID_MARK):
        try:
            return int(line[len(PGID_MARK) :].strip())
        except ValueError:
            return None
    return None
