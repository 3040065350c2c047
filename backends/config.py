"""experiment.json: load and validate it in Auptimizer 2.0's format.

Every mistake a person can make in it becomes one :class:`ConfigError` whose message names the
file and key and says what to do, so the CLI can print it as its only line. env.ini is
:mod:`aup_tui_backends.env_ini`'s (its names are importable from here too, as they always were).
"""

from __future__ import annotations

import copy
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, TypedDict

from .early_stop import make_policy
from .env_ini import (
    COUNT_KEYS,
    ENV_SECTION,
    INIT_HINT,
    MAPPING_KEYS,
    EnvConfig,
    HostSpec,
    current_umask,
    find_env,
    load_env,
    parse_host,
    write_env,
)
from .errors import ConfigError
from .optional import require_ray
from .proposer_catalog import RESERVED_PARAMETER_NAMES, proposer_spec
from .values import is_int, is_number, value_kind, value_text

__all__ = [
    "COUNT_KEYS",
    "ENV_SECTION",
    "INIT_HINT",
    "MAPPING_KEYS",
    "PARAM_TYPES",
    "REQUIRED_KEYS",
    "AUPTIMIZER_ARGS",
    "RESOURCE_ARG_KEYS",
    "RESOURCE_TYPES",
    "EnvConfig",
    "ExperimentConfig",
    "HostSpec",
    "JSONObject",
    "JobFailure",
    "current_umask",
    "find_env",
    "load_env",
    "load_experiment",
    "parse_host",
    "validate_experiment",
    "write_env",
]

REQUIRED_KEYS = ("script", "resource", "name", "target", "proposer")
RESOURCE_TYPES = ("cpu", "gpu", "node", "aws", "passive", "ray")
PARAM_TYPES = ("float", "int", "choice")


#: a JSON object as experiment.json holds it (keys are strings, values any JSON)
JSONObject = dict[str, Any]


class JobFailure(TypedDict):
    """``job_failure`` with Auptimizer's defaults filled in."""

    ignore_fail: bool
    job_retries: int


def _default_job_failure() -> JobFailure:
    return {"ignore_fail": False, "job_retries": 0}


@dataclass
class ExperimentConfig:
    """A validated experiment.json; ``raw`` keeps the file's JSON verbatim for the store.

    ``n_samples`` is 0 when the file leaves it to the proposer (sequence: the whole grid);
    the proposer's own ``n_samples`` is the number of jobs that will run.
    """

    name: str
    script: str
    resource: str
    proposer: str
    target: str
    n_samples: int
    n_parallel: int = 1
    workingdir: str = field(default_factory=os.getcwd)
    random_seed: int | None = None
    parameter_config: list[JSONObject] = field(default_factory=list)
    resource_args: JSONObject = field(default_factory=dict)
    runtime_args: JSONObject = field(default_factory=dict)
    job_failure: JobFailure = field(default_factory=_default_job_failure)
    multi_res_labels: list[str] = field(default_factory=list)
    path: str | None = None
    raw: JSONObject = field(default_factory=dict)
    #: node and aws: `workingdir` as written, a path on the node (`~` = the node's home);
    #: `workingdir` is then the local folder beside the script, where `jobs/` keeps local copies
    remote_workingdir: str | None = None

    @property
    def maximize(self) -> bool:
        return self.target == "max"


def load_experiment(path: str | os.PathLike[str]) -> ExperimentConfig:
    """Read and validate an experiment file; a relative workingdir is taken from its folder."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(f"experiment file {path} not found — check the path") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a folder — give the experiment's JSON file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text — save it as a UTF-8 JSON file") from None
    except OSError as e:
        raise ConfigError(f"cannot read {path} ({e.strerror}) — check its permissions") from None
    try:
        data = json.loads(text, parse_constant=_not_json)
    except json.JSONDecodeError as e:
        where = f"{path} line {e.lineno}, column {e.colno}"
        raise ConfigError(f"{where}: {e.msg} — fix the JSON syntax") from None
    except ValueError as e:  # NaN / Infinity: Python reads them, JSON and the jobs' parsers do not
        raise ConfigError(f"{path} holds {e} — write a number") from None
    except RecursionError:
        raise ConfigError(f"{path} is nested too deeply to be an experiment — check the file") from None
    config = validate_experiment(data, source=path, base_dir=os.path.dirname(os.path.abspath(path)))
    config.path = os.path.abspath(path)
    return config


MAX_DEPTH = 32  # nesting levels in experiment.json; deeper is damage, and would exhaust the stack


def _depth(value: Any) -> int:
    """How deeply lists and objects nest in `value` (iteratively: any depth is safe to measure)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            if level <= MAX_DEPTH:
                stack.extend(
                    (child, level + 1) for child in (item.values() if isinstance(item, dict) else item)
                )
    return deepest


def _not_json(name: str) -> None:
    raise ValueError(f"{name}, which is not a JSON number")


def validate_experiment(
    data: JSONObject, source: str = "experiment.json", base_dir: str | None = None
) -> ExperimentConfig:
    """Check an already-parsed experiment and fill Auptimizer's defaults.

    ``base_dir`` anchors a relative ``workingdir`` (the current directory when None).
    """
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source} must hold a JSON object with the experiment's keys, not {value_kind(data)}"
        )
    if _depth(data) > MAX_DEPTH:
        raise ConfigError(
            f"{source} nests values more than {MAX_DEPTH} levels deep — "
            "no experiment needs that; check the file"
        )
    missing = [key for key in REQUIRED_KEYS if key not in data]
    if missing:
        raise ConfigError(
            f"{source} is missing required key{'s' if len(missing) > 1 else ''} "
            f"{', '.join(missing)} — add {'them' if len(missing) > 1 else 'it'}"
        )
    for key in ("name", "script"):
        if not isinstance(data[key], str) or not data[key].strip() or "\0" in data[key]:
            raise ConfigError(f"{key} in {source} must be a non-empty string, got {value_text(data[key])}")
    if data["resource"] not in RESOURCE_TYPES:
        raise ConfigError(
            f"resource {value_text(data['resource'])} in {source} is not supported "
            f"— use one of {', '.join(RESOURCE_TYPES)}"
        )
    if data["resource"] == "ray":
        require_ray(source)  # one message saying how to install it, before anything is recorded
    if data["target"] not in ("min", "max"):
        raise ConfigError(f'target {value_text(data["target"])} in {source} must be "min" or "max"')
    if isinstance(data["proposer"], str) and not data["proposer"].isprintable():
        raise ConfigError(
            f"proposer {value_text(data['proposer'])} in {source} is not a proposer's name "
            "— use one such as random or sequence"
        )
    proposer = proposer_spec(data["proposer"], source)
    if proposer.needs_n_samples and "n_samples" not in data:
        raise ConfigError(
            f"n_samples in {source} is required by the {proposer.name} proposer "
            "— set it to the number of jobs to run"
        )
    n_samples = _whole(data, "n_samples", source, minimum=int(proposer.needs_n_samples), default=0)
    resource_args = _resource_args(data, source)
    make_policy(resource_args.get("early_stop"), data["target"] == "max", source)
    remote = data["resource"] in ("node", "aws")
    if remote:
        script, workingdir, remote_workingdir = _remote_layout(data, source, base_dir)
    else:
        script, workingdir, remote_workingdir = data["script"], _workingdir(data, source, base_dir), None
    return ExperimentConfig(
        name=data["name"],
        script=script,
        resource=data["resource"],
        proposer=data["proposer"],
        target=data["target"],
        n_samples=n_samples,
        n_parallel=_whole(data, "n_parallel", source, minimum=1, default=1),
        workingdir=workingdir,
        remote_workingdir=remote_workingdir,
        random_seed=_seed(data, source),
        parameter_config=_parameters(data, source),
        resource_args=resource_args,
        runtime_args=_runtime_args(data, source),
        job_failure=_job_failure(data, source),
        multi_res_labels=_labels(data, source),
        raw=data,
    )


def _whole(data: JSONObject, key: str, source: str, minimum: int, default: int) -> int:
    value = data.get(key, default)
    if not is_int(value) or value < minimum:
        raise ConfigError(
            f"{key} in {source} must be a whole number of at least {minimum}, got {value_text(value)}"
        )
    return value


def _seed(data: JSONObject, source: str) -> int | None:
    seed = data.get("random_seed")
    if seed is not None and not is_int(seed):
        raise ConfigError(f"random_seed in {source} must be a whole number, got {value_text(seed)}")
    return seed


def _workingdir(data: JSONObject, source: str, base_dir: str | None, local: bool = True) -> str:
    """The absolute working folder; for local resources it must not be a file (checked now, not
    when the first job tries to write its config there)."""
    folder = data.get("workingdir", os.getcwd())
    if not isinstance(folder, str) or not folder or "\0" in folder:
        raise ConfigError(f"workingdir in {source} must be a folder path, got {value_text(folder)}")
    folder = os.path.abspath(os.path.join(base_dir or os.getcwd(), os.path.expanduser(folder)))
    if local and os.path.exists(folder) and not os.path.isdir(folder):
        raise ConfigError(
            f"workingdir {folder} in {source} is a file, not a folder "
            "— point workingdir at the folder the jobs should run in"
        )
    return folder


def _remote_layout(data: JSONObject, source: str, base_dir: str | None) -> tuple[str, str, str]:
    """Node and aws experiments, as Auptimizer runs them: `workingdir` is a folder on the node
    (`~` = the node's home; a relative one is taken like a local one, the same path on the node),
    `script` a file here, relative to the folder you launch from. Returns (the script's name,
    the local folder beside it for `jobs/`, the node's folder). Where the script is not in the
    launch folder, the experiment file's folder and then the same path as `workingdir` here are
    tried (what aup-tui did before); where it is nowhere here, the node's copy is used."""
    folder = data.get("workingdir")
    if folder is None:
        remote = os.getcwd()  # Auptimizer's default: the same path on the node as here
    elif not isinstance(folder, str) or not folder or "\0" in folder:
        raise ConfigError(
            f"workingdir in {source} must be a folder path on the node, got {value_text(folder)}"
        )
    elif folder == "~" or folder.startswith("~/"):
        remote = folder.rstrip("/") or "~"
    elif folder.startswith("~"):
        raise ConfigError(
            f"workingdir {folder} in {source}: only ~ (the node's home) is understood, "
            "not ~user — write the folder's full path"
        )
    else:
        remote = os.path.normpath(os.path.join(base_dir or os.getcwd(), folder))
    script = os.path.expanduser(data["script"])
    candidates = [os.getcwd()] + [d for d in (base_dir, None if remote.startswith("~") else remote) if d]
    found = next(
        (os.path.join(d, script) for d in candidates if os.path.isfile(os.path.join(d, script))), None
    )
    local = os.path.abspath(found or os.path.join(candidates[0], script))
    return os.path.basename(local), os.path.dirname(local), remote


# resource_args the managers read, by the type they need (Auptimizer's names, and our additions)
_ARG_NUMBERS = (
    "async_reconnect",
    "async_timeout",
    "reconn_wait_time",
    "connect_timeout",
    "start_timeout",
    "kill_grace",
    "connection_wait",
    "waiter_delay",
)
_ARG_WHOLE = ("max_retries", "connection_retry", "waiter_max_attempts")
_ARG_FLAGS = ("async_run", "shutdown", "accept_new_hosts", "reuse_connections", "use_private_ip")
#: the Ray manager's: the task's resource request and Ray's runtime_env (an object)
_ARG_RAY = ("num_cpus", "num_gpus", "resources", "runtime_env")
_ARG_TEXT = ("region", "region_name", "profile", "profile_name", "endpoint_url", "known_hosts")
# what the engine itself passes to a manager: the same key in resource_args would collide
_ARG_ENGINE = (
    "connector",
    "n_parallel",
    "auppath",
    "eid",
    "bus",
    "maximize",
    "early_stop_policy",
    "key",
    "monitor",
    "pool",
    "username",
)
#: Auptimizer's own manager arguments (its Experiment passes the last four to every manager)
AUPTIMIZER_ARGS = (
    "early_stop",
    "track_intermediate_results",
    "multi_res_labels",
    "save_model",
    "script",
    "workingdir",
    "runtime_args",
    "one_shot",
)
#: every resource_args key some manager reads — the one list both this load-time check and the
#: managers' constructors (UnknownArgumentError) use. SSH's `async_run` on a CPU run is not a
#: mistake: Auptimizer ignores it there too.
RESOURCE_ARG_KEYS = frozenset(
    _ARG_NUMBERS
    + _ARG_WHOLE
    + _ARG_FLAGS
    + _ARG_TEXT
    + AUPTIMIZER_ARGS
    + _ARG_RAY
    + ("address_override", "remote_workingdir")
)


def _resource_args(data: JSONObject, source: str) -> JSONObject:
    """`resource_args` with the types its managers need, checked now rather than when the
    manager is built (a traceback then, after the experiment was recorded)."""
    args = _object(data, "resource_args", source)
    for key, value in args.items():
        where = f"resource_args.{key} in {source}"
        if key in _ARG_ENGINE:
            raise ConfigError(f"{where} is set by aup-tui itself — remove it")
        if key == "remote_workingdir":
            raise ConfigError(
                f"{where} is not used: for node and aws experiments workingdir is the folder "
                "on the node (as in Auptimizer) — move the path there"
            )
        if key not in RESOURCE_ARG_KEYS:  # refused before the experiment is recorded, not after
            raise ConfigError(
                f"{where} is not an argument any resource manager takes — remove it (or check the spelling)"
            )
        if (
            key in _ARG_NUMBERS
            and not (value is None and key == "async_timeout")
            and not (is_number(value) and value >= 0)
        ):
            raise ConfigError(f"{where} must be a number of seconds (0 or more), got {value_text(value)}")
        if key in _ARG_WHOLE and not (is_int(value) and value >= 0):
            raise ConfigError(f"{where} must be a whole number of at least 0, got {value_text(value)}")
        if key in _ARG_FLAGS and not isinstance(value, bool) and value not in (0, 1):
            raise ConfigError(f"{where} must be true or false, got {value_text(value)}")
        if key in _ARG_TEXT and value is not None and (not isinstance(value, str) or "\0" in value):
            raise ConfigError(f"{where} must be a string, got {value_text(value)}")
        if key in ("num_cpus", "num_gpus") and not (is_number(value) and value >= 0):
            raise ConfigError(f"{where} must be a number of at least 0, got {value_text(value)}")
        if key == "resources" and not (
            isinstance(value, dict) and all(is_number(v) and v >= 0 for v in value.values())
        ):
            raise ConfigError(
                f'{where} must map Ray resource names to amounts, like {{"accelerator": 1}}, got {value_text(value)}'
            )
        if key == "runtime_env" and not isinstance(value, dict):
            raise ConfigError(
                f'{where} must be a Ray runtime_env object, like {{"pip": ["numpy"]}}, got {value_text(value)}'
            )
        if (
            key == "address_override"
            and value is not None
            and not (
                isinstance(value, str)
                or (isinstance(value, dict) and all(isinstance(v, str) for v in value.values()))
            )
        ):
            raise ConfigError(
                f'{where} must be "host[:port]" or {{"i-…": "host[:port]"}}, got {value_text(value)}'
            )
    return args


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _runtime_args(data: JSONObject, source: str) -> JSONObject:
    """`runtime_args`: `env` an object of variable names to plain values, scripts as text."""
    args = _object(data, "runtime_args", source)
    env = args.get("env")
    if env is not None:
        if not isinstance(env, dict):
            raise ConfigError(
                f"runtime_args.env in {source} must be a JSON object of variable names "
                f'to values, like {{"OMP_NUM_THREADS": "1"}}, not {value_kind(env)}'
            )
        for name, value in env.items():
            if not _ENV_NAME.fullmatch(name):
                raise ConfigError(
                    f"runtime_args.env in {source} has the variable name {value_text(name)}, "
                    "which is not a valid environment variable name: use letters, digits and '_'"
                )
            if not isinstance(value, (str, int, float)) or isinstance(value, bool) or "\0" in str(value):
                raise ConfigError(
                    f"runtime_args.env.{name} in {source} must be a string or a number, got {value_text(value)}"
                )
    for key in ("prescript", "postscript"):
        value = args.get(key)
        if value is not None and (not isinstance(value, str) or "\0" in value):
            raise ConfigError(
                f"runtime_args.{key} in {source} must be shell commands as a string, got {value_text(value)}"
            )
    if not isinstance(args.get("overwrite", False), bool):
        raise ConfigError(
            f"runtime_args.overwrite in {source} must be true or false, got {value_text(args['overwrite'])}"
        )
    return args


def _object(data: JSONObject, key: str, source: str) -> JSONObject:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{key} in {source} must be a JSON object {{...}}, not {value_kind(value)}")
    return copy.deepcopy(value)


def _job_failure(data: JSONObject, source: str) -> JobFailure:
    """Auptimizer's rule: no job_failure means no retries; job_failure without job_retries means 3."""
    if "job_failure" not in data:
        return _default_job_failure()
    given = _object(data, "job_failure", source)
    ignore_fail = given.get("ignore_fail", False)
    if not isinstance(ignore_fail, bool):
        raise ConfigError(
            f"job_failure.ignore_fail in {source} must be true or false, got {value_text(ignore_fail)}"
        )
    return {
        "ignore_fail": ignore_fail,
        "job_retries": _whole(given, "job_retries", f"job_failure in {source}", minimum=0, default=3),
    }


def _labels(data: JSONObject, source: str) -> list[str]:
    labels = data.get("multi_res_labels", [])
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise ConfigError(f"multi_res_labels in {source} must be a list of names, got {value_text(labels)}")
    return list(labels)


def _parameters(data: JSONObject, source: str) -> list[JSONObject]:
    params = data.get("parameter_config")
    if not isinstance(params, list) or not params:
        raise ConfigError(
            f"parameter_config in {source} must be a non-empty list of parameters "
            'such as {"name": "lr", "type": "float", "range": [0.001, 0.1]}'
        )
    checked: list[JSONObject] = []
    for index, param in enumerate(params):
        checked.append(_parameter(param, index, source))
        if any(other["name"] == checked[-1]["name"] for other in checked[:-1]):
            raise ConfigError(
                f"parameter '{checked[-1]['name']}' appears twice in parameter_config "
                f"of {source} — give each parameter its own name"
            )
    return checked


def _parameter(param: Any, index: int, source: str) -> JSONObject:
    """One parameter_config entry, with Auptimizer's defaults (type int, range [0, 1]) filled in."""
    if not isinstance(param, dict) or not isinstance(param.get("name"), str) or not param["name"]:
        raise ConfigError(f'parameter_config[{index}] in {source} needs a "name" — the key your script reads')
    if not param["name"].isprintable():
        raise ConfigError(
            f"parameter_config[{index}] in {source} has the name {value_text(param['name'])} "
            "— use a name without line breaks or control characters"
        )
    where = f"parameter '{param['name']}' in {source}"
    if param["name"] in RESERVED_PARAMETER_NAMES:
        raise ConfigError(
            f"{where} uses a reserved name: {RESERVED_PARAMETER_NAMES[param['name']]}, "
            "so the value would be overwritten — rename the parameter"
        )
    kind = param.get("type", "int")
    if not isinstance(kind, str) or kind.lower() not in PARAM_TYPES:
        raise ConfigError(f"{where} has type {value_text(kind)} — use float, int or choice")
    out = copy.deepcopy(param)
    out["type"] = kind = kind.lower()
    span = out.setdefault("range", [0, 1])
    if kind == "choice":
        if not isinstance(span, list) or not span:
            raise ConfigError(f"{where} needs a non-empty list of values as its range")
        return out
    if not (isinstance(span, list) and len(span) == 2 and all(is_number(v) for v in span)):
        raise ConfigError(f"{where} needs a range of two numbers [low, high], got {value_text(span)}")
    if span[0] > span[1]:
        raise ConfigError(f"{where} has range {value_text(span)} with low above high — swap them")
    if kind == "int":
        if not all(float(v).is_integer() for v in span):
            raise ConfigError(
                f"{where} is an int parameter but its range {value_text(span)} "
                "holds fractions — use whole numbers or type float"
            )
        out["range"] = [int(v) for v in span]
    if "interval" in out:
        step = out["interval"]
        whole = kind != "int" or (is_number(step) and float(step).is_integer())
        if not is_number(step) or step <= 0 or not whole:
            raise ConfigError(
                f"interval of {where} must be a positive "
                f"{'whole number' if kind == 'int' else 'number'}, got {value_text(step)}"
            )
    if "n" in out and (not is_int(out["n"]) or out["n"] < 2):
        raise ConfigError(f"n of {where} must be a whole number of at least 2, got {value_text(out['n'])}")
    return out
