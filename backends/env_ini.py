"""``.aup/env.ini``: find, read and write it in Auptimizer 2.0's format, and the host specs its
node and AWS mappings hold.

Every mistake a person can make in it becomes one :class:`ConfigError` whose message names the
file and key and says what to do. This module imports nothing of experiment.json's validation
(:mod:`aup_tui_backends.config`), which re-exports its names.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import tempfile
from dataclasses import dataclass, field

from .errors import ConfigError
from .values import value_kind, value_text

ENV_SECTION = "Auptimizer"
MAPPING_KEYS = ("gpu_mapping", "node_mapping", "aws_mapping")
COUNT_KEYS = ("n_cpu", "n_passive", "n_ray")  # our extra keys: how many cpu, passive and ray slots
INIT_HINT = "run `aup-tui init --cpu 2` first"


@dataclass
class EnvConfig:
    """The ``[Auptimizer]`` section of ``.aup/env.ini``; unknown keys ride along in ``extra``."""

    path: str
    auppath: str
    Auptimizer_PATH: str = ""
    SQL_ENGINE: str = "tinydb"
    TMP_FOLDER: str = ""
    gpu_mapping: dict[str, str] = field(default_factory=dict)
    node_mapping: dict[str, str] = field(default_factory=dict)
    aws_mapping: dict[str, str] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.Auptimizer_PATH = self.Auptimizer_PATH or self.auppath
        self.TMP_FOLDER = self.TMP_FOLDER or os.path.join(tempfile.gettempdir(), "auptmp")

    @property
    def ray_address(self) -> str | None:
        """Which Ray (`aup-tui init --ray [ADDRESS]`): None when Ray is not set up here, "" for a
        local Ray started with each run, else the cluster's address (or `auto`)."""
        address = self.extra.get("ray_address")
        return None if address is None else address.strip()


def find_env(auppath: str | None = None) -> str:
    """The .aup folder to use: the given one, else ./.aup, else ~/.aup (Auptimizer's search)."""
    if auppath is not None:
        folder = os.path.abspath(os.path.expanduser(auppath))
        if not os.path.isfile(os.path.join(folder, "env.ini")):
            raise ConfigError(f"no env.ini in {folder} — {INIT_HINT} or pass the right --aup folder")
        return folder
    for folder in (os.path.abspath(".aup"), os.path.join(os.path.expanduser("~"), ".aup")):
        if os.path.isfile(os.path.join(folder, "env.ini")):
            return folder
    raise ConfigError(f"no .aup/env.ini found in ./.aup or ~/.aup — {INIT_HINT}")


def load_env(auppath: str = ".aup") -> EnvConfig:
    """Read ``<auppath>/env.ini`` as Auptimizer writes it (keys case-sensitive, mappings as JSON)."""
    folder = os.path.abspath(os.path.expanduser(auppath))
    path = os.path.join(folder, "env.ini")
    parser = _parser()
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f)
    except FileNotFoundError:
        raise ConfigError(f"no env.ini in {folder} — {INIT_HINT}") from None
    except (configparser.Error, UnicodeDecodeError) as e:
        reason = " ".join(str(e).split())
        raise ConfigError(
            f"{path} is not a valid env.ini ({reason}) "
            "— fix it or recreate it with `aup-tui init --overwrite`"
        ) from None
    except OSError as e:
        raise ConfigError(f"cannot read {path} ({e.strerror}) — check its permissions") from None
    if not parser.has_section(ENV_SECTION):
        raise ConfigError(
            f"{path} has no [{ENV_SECTION}] section — recreate it with `aup-tui init --overwrite`"
        )
    values = dict(parser.items(ENV_SECTION))
    mappings = {key: _mapping(values.pop(key, ""), key, path) for key in MAPPING_KEYS}
    seen: dict[str, str] = {}
    for key, mapping in mappings.items():
        for rid in mapping:
            if rid in seen:
                raise ConfigError(
                    f"resource id {rid} is in both {seen[rid]} and {key} of {path} "
                    "— give each resource its own id"
                )
            seen[rid] = key
    for key in COUNT_KEYS:
        if key in values and not re.fullmatch(r"\s*\d+\s*", values[key]):
            raise ConfigError(
                f"{key} in {path} must be a whole number of at least 0, got {values[key]!r} "
                "— fix it or set it with `aup-tui init`"
            )
    return EnvConfig(
        path=path,
        auppath=folder,
        Auptimizer_PATH=values.pop("Auptimizer_PATH", ""),
        SQL_ENGINE=values.pop("SQL_ENGINE", "tinydb"),
        TMP_FOLDER=values.pop("TMP_FOLDER", ""),
        extra=values,
        **mappings,
    )


def write_env(env: EnvConfig) -> None:
    """Write env.ini in Auptimizer's format, atomically so a crash never leaves half a file."""
    section = {
        "Auptimizer_PATH": env.Auptimizer_PATH,
        "SQL_ENGINE": env.SQL_ENGINE,
        "TMP_FOLDER": env.TMP_FOLDER,
    }
    for key in MAPPING_KEYS:
        if getattr(env, key):
            section[key] = json.dumps(getattr(env, key))
    section.update({k: v for k, v in env.extra.items() if k not in section})
    parser = _parser()
    parser[ENV_SECTION] = section
    folder = os.path.dirname(os.path.abspath(env.path))
    os.makedirs(folder, exist_ok=True)
    mode = os.stat(env.path).st_mode & 0o777 if os.path.exists(env.path) else 0o666 & ~current_umask()
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".env.ini.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            parser.write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, env.path)
    except BaseException:
        os.unlink(tmp)
        raise


def current_umask() -> int:
    """The process's umask, read without changing it where Linux tells it (/proc), since
    setting it even for a moment would race with files other threads create."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class _CaseSensitiveParser(configparser.ConfigParser):
    """env.ini's parser: Auptimizer's keys are case-sensitive (Auptimizer_PATH)."""

    def optionxform(self, optionstr: str) -> str:
        return optionstr


def _parser() -> configparser.ConfigParser:
    return _CaseSensitiveParser(interpolation=None)


# a gpu_mapping value: card indices or GPU/MIG UUIDs, comma-separated (CUDA_VISIBLE_DEVICES' forms)
_GPU_CARD = r"(?:\d+|(?:GPU|MIG)-[A-Za-z0-9/_-]+)"
GPU_CARDS = re.compile(rf"{_GPU_CARD}(?:,{_GPU_CARD})*")
_EXAMPLES = {
    "gpu_mapping": '{"1": "0", "2": "0"}',
    "node_mapping": '{"3": "user@host:22 ~/.ssh/id_rsa"}',
    "aws_mapping": '{"4": "ubuntu@i-0123456789abcdef0"}',
}


def _mapping(text: str, key: str, path: str) -> dict[str, str]:
    """One JSON mapping of env.ini: resource ids (whole numbers) to a GPU card or a host."""
    if not text.strip():
        return {}
    example = _EXAMPLES[key]
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        why = f"{e.msg} at column {e.colno}" if isinstance(e, json.JSONDecodeError) else "nested too deep"
        raise ConfigError(f"{key} in {path} is not valid JSON ({why}) — write it like {example}") from None
    if not isinstance(value, dict):
        raise ConfigError(
            f"{key} in {path} must be a JSON object mapping resource ids to resources, "
            f"like {example}, not {value_kind(value)}"
        )
    out: dict[str, str] = {}
    for rid, item in value.items():
        if not re.fullmatch(r"[0-9]{1,9}", rid) or int(rid) < 1:
            raise ConfigError(
                f"{key} in {path} has the resource id {rid!r} — ids are whole numbers from 1, like {example}"
            )
        if isinstance(item, int) and not isinstance(item, bool) and key == "gpu_mapping" and item >= 0:
            item = str(item)
        if not isinstance(item, str):
            raise ConfigError(
                f"{key} in {path} maps resource {rid} to {value_text(item)} — write it like {example}"
            )
        if key == "gpu_mapping" and not GPU_CARDS.fullmatch(item.strip()):
            raise ConfigError(
                f"gpu_mapping in {path} maps resource {rid} to {item!r}, which is not a GPU "
                f"card number (or GPU UUID) — write it like {example}"
            )
        if key != "gpu_mapping":
            try:
                parse_host(item)
            except ConfigError as e:
                raise ConfigError(f"{key} in {path}, resource {rid}: {e}") from None
        out[str(int(rid))] = item.strip() if key == "gpu_mapping" else item
    return out


@dataclass(frozen=True)
class HostSpec:
    """A machine to run jobs on: ``user@host:port`` plus an optional private-key file."""

    user: str | None
    host: str
    port: int = 22
    key: str | None = None

    def __str__(self) -> str:
        return f"{self.user}@{self.host}:{self.port}" if self.user else f"{self.host}:{self.port}"


_HOST = re.compile(r"(?:(?P<user>[^@\s:]+)@)?(?P<host>[A-Za-z0-9._-]+)(?::(?P<port>\d{1,5}))?")


def parse_host(spec: str) -> HostSpec:
    """Parse ``user@host``, ``user@host:port`` or ``host`` (an AWS instance id counts as a host),
    optionally followed by whitespace and a private-key path."""
    parts = spec.split() if isinstance(spec, str) and "\0" not in spec else []
    match = _HOST.fullmatch(parts[0]) if 1 <= len(parts) <= 2 else None
    port = int(match["port"] or 22) if match else 0
    if not match or not 1 <= port <= 65535:
        raise ConfigError(
            f"bad host {spec!r} — write it as user@host, user@host:port or host, "
            "optionally followed by a space and a private-key file"
        )
    key = os.path.expanduser(parts[1]) if len(parts) == 2 else None
    return HostSpec(user=match["user"], host=match["host"], port=port, key=key)
