"""Damaged store files (seeded, bounded fuzzing): every command answers in one line or works.

After a real small run, one store file is truncated, has bytes flipped, is replaced by binary
garbage, is deleted or emptied; then `status`, `status --json`, `resources` and `run --headless`
run as real processes. Each must exit 0 or 1 without a traceback, and no record that was in
another (undamaged) file may change — in particular no id may restart and overwrite experiment 1.

    AUP_FUZZ_CASES=200 AUP_FUZZ_SEED=7 pytest tests/test_store_fuzz.py   # a longer run
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import pytest
from aup_tui_backends.store.files import JournaledStorage
from helpers import cli, write_experiment, write_script

CASES = int(os.environ.get("AUP_FUZZ_CASES", "10"))
SEED = int(os.environ.get("AUP_FUZZ_SEED", "20261203"))
MUTATIONS = ("truncate", "flip", "garbage", "delete", "empty")
COMMANDS = (("status",), ("status", "--json"), ("resources",), ("run", "--headless", "experiment.json"))
#: records a run changes by design (id counters, who holds a resource, the env.ini sync stamp)
VOLATILE = {("meta.json", "counters"), ("meta.json", "taken"), ("meta.json", "sync")}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A folder after two real small runs (so there are two experiments and several shards)."""
    from aup_tui_backends.setup import init_aup

    folder = tmp_path_factory.mktemp("fuzz-origin")
    init_aup(str(folder / ".aup"), cpu=2)
    write_script(
        folder,
        "job.sh",
        """
        x=$(sed 's/.*"x": *\\([-0-9.e]*\\).*/\\1/' "$1")
        echo "#Auptimizer:$x"
        echo "#Auptimizer:$x"
    """,
    )
    write_experiment(folder, n_samples=40, workingdir=".")
    for _ in range(2):
        res = cli("run", "--headless", "experiment.json", cwd=folder)
        assert res.returncode == 0, res.stderr
    return folder


def _databases(store: Path) -> list[str]:
    names = {
        str(p.relative_to(store)).removesuffix(".log")
        for p in store.rglob("*.json*")
        if p.name.endswith((".json", ".json.log")) and p.name != "summary.json"
    }  # (a cache, not a database)
    return sorted(names)


def _records(store: Path, damaged: str) -> dict[tuple[str, str, str], dict]:
    """Every record of every database but the damaged one: (file, table, id) → document."""
    out = {}
    for name in _databases(store):
        if name == damaged:
            continue
        data = JournaledStorage(str(store / name)).read() or {}
        for tbl, docs in data.items():
            if (name, tbl) not in VOLATILE:
                out.update({(name, tbl, doc_id): doc for doc_id, doc in docs.items()})
    return out


def _mutate(path: Path, how: str, rng: random.Random) -> None:
    data = path.read_bytes()
    if how == "delete":
        path.unlink()
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "truncate":
        path.write_bytes(data[: rng.randrange(len(data))] if data else b"")
    elif how == "garbage":
        path.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))))
    else:  # flip a few bytes
        buf = bytearray(data or b"{}")
        for _ in range(rng.randint(1, 4)):
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(buf))


def _cases() -> list[tuple[int, str]]:
    rng = random.Random(SEED)
    return [(i, rng.choice(MUTATIONS)) for i in range(CASES)]


@pytest.mark.parametrize("case,how", _cases())
def test_a_damaged_store_file_never_gives_a_traceback(finished_run, tmp_path, case, how):
    rng = random.Random(SEED * 1000 + case)
    folder = tmp_path / "w"
    shutil.copytree(finished_run, folder)
    store = folder / ".aup" / "store"
    files = sorted(p for p in store.rglob("*") if p.is_file() and p.stat().st_size or p.name == "meta.json")
    target = (
        files[case % len(files)] if case < len(files) else rng.choice(files)
    )  # every file once, then random
    damaged = str(target.relative_to(store)).removesuffix(".log")
    before = _records(store, damaged)
    configs = {p.name: p.read_bytes() for p in (folder / "jobs").glob("*.json")}
    _mutate(target, how, rng)
    for args in COMMANDS:
        res = cli(*args, cwd=folder, timeout=60)
        where = f"{how} of {target.relative_to(folder)}, `aup-tui {' '.join(args)}`"
        assert "Traceback" not in res.stderr, f"{where}:\n{res.stderr}"
        assert res.returncode in (0, 1), f"{where}: exit {res.returncode}\n{res.stderr}"
        if res.returncode == 1:
            assert res.stderr.strip(), f"{where}: exit 1 without a message"
        if args[-1] == "--json" and res.returncode == 0:
            json.loads(res.stdout)
    after = _records(store, damaged)
    changed = [key for key, doc in before.items() if key in after and after[key] != doc]
    assert not changed, f"{how} of {damaged} changed records elsewhere: {changed[:5]}"
    assert not [k for k in before if k not in after and k[0] != damaged], f"{how} of {damaged} lost records"
    overwritten = [n for n, body in configs.items() if (folder / "jobs" / n).read_bytes() != body]
    assert not overwritten, f"{how} of {damaged}: job files overwritten: {overwritten[:5]}"
