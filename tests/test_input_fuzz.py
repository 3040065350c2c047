"""Damaged input files never crash the CLI: one line on stderr, exit 0 or 1, earlier records intact.

Seeded and bounded: each case restores the pristine inputs, damages one of them (truncation, byte
flips, binary garbage, deletion, a JSON value of the wrong type) and runs the real CLI in a
subprocess. The store's own files are fuzzed elsewhere; only the files a person writes are here.
`AUP_FUZZ_CASES` / `AUP_FUZZ_SEED` widen a local run.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

from helpers import ROOT, write_experiment, write_script

CASES = int(os.environ.get("AUP_FUZZ_CASES", "150"))
SEED = int(os.environ.get("AUP_FUZZ_SEED", "20261203"))
RUN_TIMEOUT = 20.0  # a run of one or two instant jobs; longer means it hangs

WRONG_TYPES = [
    None,
    True,
    False,
    0,
    -1,
    2.5,
    "",
    "text",
    "\u0000",
    "a\nb",
    [],
    [1, "a"],
    {},
    {"a": {}},
    "0,x",
]


def _aup(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The CLI as a user runs it, in its own session so a hung run is killed with its jobs."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), HOME=str(cwd))  # no ~/.aup of the machine
    proc = subprocess.Popen(
        [sys.executable, "-m", "aup_tui.cli", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(
            f"`aup-tui {' '.join(args)}` did not end in {RUN_TIMEOUT}s:\n{err.decode(errors='replace')}"
        ) from None
    return subprocess.CompletedProcess(
        proc.args, proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")
    )


def _json_paths(value, path=()):
    """Every place in a JSON document, as a key path (the root included)."""
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _json_paths(item, path + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _json_paths(item, path + (index,))


def _retype(data, rng: random.Random):
    """The document with one value (anywhere, or the whole of it) replaced by a wrongly typed one."""
    data = json.loads(json.dumps(data))
    path = rng.choice(list(_json_paths(data)))
    new = rng.choice(WRONG_TYPES)
    if not path:
        return new
    holder = data
    for key in path[:-1]:
        holder = holder[key]
    holder[path[-1]] = new
    return data


def _retype_ini(text: str, rng: random.Random) -> str:
    """env.ini with one value replaced: a wrongly typed JSON value, or garbage, or a bad count."""
    lines = text.splitlines()
    keyed = [i for i, line in enumerate(lines) if "=" in line]
    i = rng.choice(keyed)
    key = lines[i].split("=", 1)[0].strip()
    value = rng.choice(
        [
            json.dumps(rng.choice(WRONG_TYPES)),
            '{"1": "0", "x": 1}',
            '{"1": "zero"}',
            '{"0": "0"}',
            '{"1": [0]}',
            '{"9": "user@"}',
            "-3",
            "1e3",
            "[[[[[[[[",
        ]
    )
    lines[i] = f"{key} = {value}"
    if rng.random() < 0.5:  # a mapping that was not there
        lines.append(f"{rng.choice(['gpu_mapping', 'node_mapping', 'aws_mapping'])} = {value}")
    return "\n".join(lines) + "\n"


def _damage(data: bytes, name: str, rng: random.Random) -> bytes | None:
    """One damaged version of a file (None: delete it)."""
    kinds = ["truncate", "flip", "garbage", "delete", "types", "types"]
    kind = rng.choice(kinds)
    if kind == "truncate":
        return data[: rng.randrange(len(data))]
    if kind == "flip":
        out = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            out[rng.randrange(len(out))] = rng.randrange(256)
        return bytes(out)
    if kind == "garbage":
        return bytes(rng.randrange(256) for _ in range(rng.randint(1, 300)))
    if kind == "delete":
        return None
    if name == "experiment.json":
        return json.dumps(_retype(json.loads(data), rng)).encode()
    if name == "env.ini":
        return _retype_ini(data.decode(), rng).encode()
    # node list and job script: lines of wrongly typed JSON (a list where a host is expected, …)
    lines = data.decode().splitlines()
    lines[rng.randrange(len(lines))] = json.dumps(rng.choice(WRONG_TYPES))
    return ("\n".join(lines) + "\n").encode()


def test_damaged_input_files_give_one_line_never_a_traceback(tmp_path: Path):
    folder = tmp_path
    assert _aup("init", "--cpu", "2", cwd=folder).returncode == 0
    write_script(folder, "job.sh", 'echo "#Auptimizer:0.5"\n')
    write_experiment(folder, n_samples=2, n_parallel=2)
    (folder / "nodes.txt").write_text("# our nodes\nuser@127.0.0.1:2222 ~/.ssh/id_rsa\nroot@10.0.0.2\n")
    first = _aup("run", "--headless", "experiment.json", cwd=folder)
    assert first.returncode == 0, first.stderr
    baseline = _aup("status", "1", "--json", cwd=folder)
    assert baseline.returncode == 0 and json.loads(baseline.stdout)["status"] == "FINISHED"

    inputs = {
        name: folder / path
        for name, path in (
            ("experiment.json", "experiment.json"),
            ("env.ini", ".aup/env.ini"),
            ("nodes.txt", "nodes.txt"),
            ("job.sh", "job.sh"),
        )
    }
    pristine = {name: (path.read_bytes(), path.stat().st_mode) for name, path in inputs.items()}
    commands = {
        "experiment.json": [("run", "--headless", "experiment.json")],
        "env.ini": [
            ("status",),
            ("resources",),
            ("run", "--headless", "experiment.json"),
            ("stop", "--experiment", "1"),
        ],
        "nodes.txt": [("init", "--node", "nodes.txt"), ("init", "--aws", "nodes.txt")],
        "job.sh": [("run", "--headless", "experiment.json")],
    }
    rng = random.Random(SEED)
    exits: dict[int, int] = {}
    for case in range(CASES):
        for name, path in inputs.items():
            path.write_bytes(pristine[name][0])
            path.chmod(pristine[name][1])
        name = rng.choice(list(inputs))
        damaged = _damage(pristine[name][0], name, rng)
        if damaged is None:
            inputs[name].unlink()
        else:
            inputs[name].write_bytes(damaged)
        args = rng.choice(commands[name])
        out = _aup(*args, cwd=folder)
        what = f"case {case} (seed {SEED}): {name} damaged as {damaged!r:.300}, `aup-tui {' '.join(args)}`"
        assert "Traceback" not in out.stderr, f"{what}\n{out.stderr}"
        assert out.returncode in (0, 1), f"{what}: exit {out.returncode}\n{out.stderr}"
        if out.returncode == 1:
            assert out.stderr.strip(), f"{what}: exit 1 without a message"
        if out.stderr.startswith("aup-tui:"):  # an error a person caused: one line, nothing else
            assert out.stderr.count("\n") == 1, f"{what}: more than one line\n{out.stderr}"
        exits[out.returncode] = exits.get(out.returncode, 0) + 1
    for name, path in inputs.items():
        path.write_bytes(pristine[name][0])
    after = _aup("status", "1", "--json", cwd=folder)
    assert after.returncode == 0, after.stderr
    assert json.loads(after.stdout) == json.loads(baseline.stdout)
    assert exits.get(1, 0) > CASES // 4  # the damage was real: many cases were refused
