"""experiment.json and env.ini: what a person sees when the files are right, and when they're not."""

import json
import os

import pytest
from aup_tui_backends.config import (
    EnvConfig,
    ExperimentConfig,
    HostSpec,
    find_env,
    load_env,
    load_experiment,
    parse_host,
    validate_experiment,
    write_env,
)
from aup_tui_backends.errors import AupError, ConfigError


def experiment(**overrides):
    data = {
        "name": "rosenbrock",
        "script": "rosenbrock.py",
        "resource": "cpu",
        "proposer": "random",
        "target": "min",
        "n_samples": 10,
        "parameter_config": [
            {"name": "x", "type": "float", "range": [-5, 5]},
            {"name": "y", "type": "int", "range": [1, 3]},
        ],
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def write(tmp_path, data, name="experiment.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data, indent=2))
    return path


def error_of(data, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        validate_experiment(data, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- experiment.json ---------------------------------------------------------------------------


def test_valid_experiment_loads_with_auptimizer_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, experiment(random_seed=7, multi_res_labels=["acc", "time"]))
    config = load_experiment(path)
    assert isinstance(config, ExperimentConfig)
    assert (config.name, config.resource, config.proposer, config.n_samples) == (
        "rosenbrock",
        "cpu",
        "random",
        10,
    )
    assert config.n_parallel == 1
    assert config.workingdir == str(tmp_path)
    assert config.random_seed == 7
    assert config.maximize is False
    assert config.job_failure == {"ignore_fail": False, "job_retries": 0}
    assert config.multi_res_labels == ["acc", "time"]
    assert config.path == str(path)
    assert config.raw == json.loads(path.read_text())


def test_workingdir_defaults_to_where_the_cli_runs(tmp_path, monkeypatch):
    elsewhere = tmp_path / "runs"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_experiment(write(tmp_path, experiment()))
    assert config.workingdir == str(elsewhere)


def test_relative_workingdir_is_relative_to_the_experiment_file(tmp_path, monkeypatch):
    monkeypatch.chdir("/")
    (tmp_path / "exp").mkdir()
    config = load_experiment(write(tmp_path / "exp", experiment(workingdir="../work")))
    assert config.workingdir == str(tmp_path / "work")


def test_raw_keeps_the_file_verbatim(tmp_path):
    data = experiment(parameter_config=[{"name": "k", "range": [0, 4]}], custom_key={"a": 1})
    config = validate_experiment(data)
    assert config.raw == data and "type" not in config.raw["parameter_config"][0]
    assert config.parameter_config[0]["type"] == "int"  # Auptimizer's default type


def test_malformed_json_names_file_line_and_column(tmp_path):
    path = write(tmp_path, '{\n  "name": "x",\n  "script": "a.py"\n  "resource": "cpu"\n}')
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    assert str(info.value) == (f"{path} line 4, column 3: Expecting ',' delimiter — fix the JSON syntax")


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(AupError, match="not found"):
        load_experiment(tmp_path / "nope.json")


def test_missing_required_keys_are_listed_in_one_message(tmp_path):
    path = write(tmp_path, experiment(name=None, target=None, script=None))
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    assert str(info.value) == f"{path} is missing required keys script, name, target — add them"


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"target": "maximum"}, 'target "maximum" in experiment.json must be "min" or "max"'),
        (
            {"resource": "tpu"},
            (
                'resource "tpu" in experiment.json is not supported — use one of cpu, gpu, node, aws, passive, ray'
            ),
        ),
        (
            {"proposer": "foo"},
            (
                "unknown proposer 'foo' in experiment.json — available: random, sequence, "
                "spearmint, hyperband, hyperopt, bohb, tpe, gp, cmaes, qmc"
            ),
        ),
        ({"n_parallel": 0}, "n_parallel in experiment.json must be a whole number of at least 1, got 0"),
        ({"n_parallel": "2"}, 'n_parallel in experiment.json must be a whole number of at least 1, got "2"'),
        (
            {"n_samples": None},
            (
                "n_samples in experiment.json is required by the random proposer "
                "— set it to the number of jobs to run"
            ),
        ),
        ({"n_samples": 2.5}, "n_samples in experiment.json must be a whole number of at least 1, got 2.5"),
    ],
)
def test_bad_top_level_values_name_the_key_and_the_fix(overrides, expected):
    assert error_of(experiment(**overrides)).startswith(expected)  # the proposer list grows


def test_sequence_proposer_does_not_need_n_samples():
    config = validate_experiment(experiment(proposer="sequence", n_samples=None))
    assert config.n_samples == 0


@pytest.mark.parametrize(
    "param, fragment",
    [
        ({"type": "float", "range": [0, 1]}, 'parameter_config[0] in experiment.json needs a "name"'),
        ({"name": "lr", "type": "double", "range": [0, 1]}, "parameter 'lr' in experiment.json has type"),
        (
            {"name": "lr", "type": "float", "range": [1]},
            "parameter 'lr' in experiment.json needs a range of two",
        ),
        ({"name": "lr", "type": "float", "range": [1, 0]}, "low above high — swap them"),
        ({"name": "lr", "type": "float", "range": [0, "1"]}, "needs a range of two numbers"),
        ({"name": "k", "type": "int", "range": [0, 2.5]}, "parameter 'k' in experiment.json is an int"),
        (
            {"name": "opt", "type": "choice", "range": []},
            "parameter 'opt' in experiment.json needs a non-empty list",
        ),
        ({"name": "lr", "type": "float", "range": [0, 1], "interval": 0}, "interval of parameter 'lr'"),
        ({"name": "lr", "type": "float", "range": [0, 1], "n": 1}, "n of parameter 'lr'"),
    ],
)
def test_bad_parameter_names_the_parameter(param, fragment):
    assert fragment in error_of(experiment(parameter_config=[param]))


def test_duplicate_parameter_names_are_rejected():
    params = [{"name": "x", "type": "float", "range": [0, 1]}, {"name": "x", "type": "int", "range": [0, 1]}]
    assert "parameter 'x' appears twice" in error_of(experiment(parameter_config=params))


def test_missing_parameter_config_is_explained():
    assert "parameter_config in experiment.json must be a non-empty list" in error_of(
        experiment(parameter_config=None)
    )


def test_job_failure_follows_auptimizer_defaults():
    assert validate_experiment(experiment(job_failure={"ignore_fail": True})).job_failure == {
        "ignore_fail": True,
        "job_retries": 3,
    }
    assert "job_retries" in error_of(experiment(job_failure={"job_retries": -1}))


def test_bad_early_stop_is_caught_when_the_file_loads():
    message = error_of(
        experiment(resource_args={"early_stop": {"aup_policy": "magic", "aup_policy_steps": 2}})
    )
    assert "magic" in message and "use median, bandit, truncation" in message


def test_a_json_array_is_not_an_experiment():
    assert error_of([1, 2]) == (
        "experiment.json must hold a JSON object with the experiment's keys, not a list"
    )


# --- env.ini -------------------------------------------------------------------------------------

AUPTIMIZER_ENV = """[Auptimizer]
Auptimizer_PATH = /some/.aup
SQL_ENGINE = sqlite
TMP_FOLDER = /tmp/auptmp
gpu_mapping = {"1": "0", "2": "0"}
node_mapping = {"3": "ubuntu@10.0.0.5:2222 ~/.ssh/id_rsa"}
SQLITE_FILE = /some/.aup/sqlite3.db

"""


def test_auptimizer_env_ini_loads_as_is(tmp_path):
    (tmp_path / ".aup").mkdir()
    (tmp_path / ".aup" / "env.ini").write_text(AUPTIMIZER_ENV)
    env = load_env(str(tmp_path / ".aup"))
    assert env.path == str(tmp_path / ".aup" / "env.ini")
    assert env.auppath == str(tmp_path / ".aup")
    assert env.Auptimizer_PATH == "/some/.aup"
    assert env.SQL_ENGINE == "sqlite"
    assert env.TMP_FOLDER == "/tmp/auptmp"
    assert env.gpu_mapping == {"1": "0", "2": "0"}
    assert env.node_mapping == {"3": "ubuntu@10.0.0.5:2222 ~/.ssh/id_rsa"}
    assert env.aws_mapping == {}
    assert env.extra == {"SQLITE_FILE": "/some/.aup/sqlite3.db"}


def test_write_env_round_trips_and_keeps_unknown_keys(tmp_path):
    (tmp_path / ".aup").mkdir()
    (tmp_path / ".aup" / "env.ini").write_text(AUPTIMIZER_ENV)
    env = load_env(str(tmp_path / ".aup"))
    env.aws_mapping = {"4": "ec2-user@i-0abc123 ~/.ssh/aws.pem"}
    write_env(env)
    assert load_env(str(tmp_path / ".aup")) == env
    text = (tmp_path / ".aup" / "env.ini").read_text()
    assert text.startswith("[Auptimizer]\nAuptimizer_PATH = /some/.aup\n")
    assert 'gpu_mapping = {"1": "0", "2": "0"}' in text
    assert sorted(os.listdir(tmp_path / ".aup")) == ["env.ini"]  # no temp file left behind


def test_new_env_gets_sensible_defaults_and_is_written(tmp_path):
    folder = tmp_path / ".aup"
    env = EnvConfig(path=str(folder / "env.ini"), auppath=str(folder), gpu_mapping={"1": "0"})
    write_env(env)
    loaded = load_env(str(folder))
    assert loaded.SQL_ENGINE == "tinydb"
    assert loaded.Auptimizer_PATH == str(folder)
    assert loaded.gpu_mapping == {"1": "0"}
    assert "node_mapping" not in (folder / "env.ini").read_text()


def test_malformed_mapping_names_the_key_and_the_file(tmp_path):
    (tmp_path / "env.ini").write_text('[Auptimizer]\ngpu_mapping = {"1": "0",}\n')
    with pytest.raises(ConfigError) as info:
        load_env(str(tmp_path))
    message = str(info.value)
    assert message.startswith(f"gpu_mapping in {tmp_path / 'env.ini'} is not valid JSON")
    assert "\n" not in message


def test_env_without_auptimizer_section_is_explained(tmp_path):
    (tmp_path / "env.ini").write_text("[Other]\nx = 1\n")
    with pytest.raises(ConfigError, match=r"has no \[Auptimizer\] section"):
        load_env(str(tmp_path))


def test_missing_env_ini_tells_how_to_create_it(tmp_path):
    with pytest.raises(ConfigError, match="aup-tui init"):
        load_env(str(tmp_path / ".aup"))


def test_find_env_prefers_local_then_home(tmp_path, monkeypatch):
    home, project = tmp_path / "home", tmp_path / "project"
    for folder in (home / ".aup", project / ".aup"):
        folder.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(project)
    with pytest.raises(ConfigError) as info:
        find_env()
    assert str(info.value) == ("no .aup/env.ini found in ./.aup or ~/.aup — run `aup-tui init --cpu 2` first")
    (home / ".aup" / "env.ini").write_text(AUPTIMIZER_ENV)
    assert find_env() == str(home / ".aup")
    (project / ".aup" / "env.ini").write_text(AUPTIMIZER_ENV)
    assert find_env() == str(project / ".aup")
    assert find_env(str(home / ".aup")) == str(home / ".aup")
    with pytest.raises(ConfigError, match="no env.ini in"):
        find_env(str(tmp_path))


# --- hosts ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("ubuntu@10.0.0.5", HostSpec("ubuntu", "10.0.0.5", 22, None)),
        ("ubuntu@10.0.0.5:2222", HostSpec("ubuntu", "10.0.0.5", 2222, None)),
        ("gpu-box.lan", HostSpec(None, "gpu-box.lan", 22, None)),
        ("ec2-user@i-0abc123def  /keys/aws.pem", HostSpec("ec2-user", "i-0abc123def", 22, "/keys/aws.pem")),
    ],
)
def test_parse_host_forms(spec, expected):
    assert parse_host(spec) == expected


def test_parse_host_expands_home_in_key_path():
    assert parse_host("me@box:2200 ~/.ssh/id_ed25519").key == os.path.expanduser("~/.ssh/id_ed25519")


def test_host_prints_back_as_user_at_host_port():
    assert str(parse_host("me@box:2200 ~/.ssh/id")) == "me@box:2200"
    assert str(parse_host("box")) == "box:22"


@pytest.mark.parametrize("spec", ["", "me@", "me@box:notaport", "me@box:70000", "a b c", "me@@box"])
def test_bad_host_spec_is_quoted_in_the_error(spec):
    with pytest.raises(ConfigError) as info:
        parse_host(spec)
    assert str(info.value).startswith(f"bad host '{spec}' — write it as user@host")


# --- reserved names, runtime_args, workingdir ----------------------------------------------------


@pytest.mark.parametrize("name", ["job_id", "tid", "n_iterations"])
def test_reserved_parameter_names_are_refused_with_the_reason(tmp_path, name):
    path = write(
        tmp_path,
        experiment(
            parameter_config=[
                {"name": "x", "type": "float", "range": [0, 1]},
                {"name": name, "type": "int", "range": [1, 3]},
            ]
        ),
    )
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    message = str(info.value)
    assert f"parameter '{name}' in {path}" in message and "reserved" in message
    assert "under that key" in message and "rename the parameter" in message and "\n" not in message


def test_the_reserved_list_is_the_one_the_job_config_uses(tmp_path):
    """job_id is what each job's config carries; tid and n_iterations are the proposers' keys."""
    from aup_tui_backends.jobs import Job
    from aup_tui_backends.proposer_catalog import JOB_ID_KEY, RESERVED_PARAMETER_NAMES

    assert set(RESERVED_PARAMETER_NAMES) >= {"job_id", "tid", "n_iterations"}
    job = Job("job.sh", {"x": 1}, path=str(tmp_path))
    job.jid = 7
    with open(job.write_config()) as f:
        assert json.load(f)[JOB_ID_KEY] == 7


@pytest.mark.parametrize(
    "runtime, fragment",
    [
        ({"env": ["A=1"]}, "runtime_args.env in"),
        ({"env": "A=1"}, "must be a JSON object"),
        ({"env": {"A B": "1"}}, "not a valid environment variable name"),
        ({"env": {"A": {"b": 1}}}, "runtime_args.env.A in"),
        ({"env": {"A": "x\u0000y"}}, "runtime_args.env.A in"),
        ({"prescript": ["source x"]}, "runtime_args.prescript"),
        ({"overwrite": "yes"}, "runtime_args.overwrite"),
    ],
)
def test_bad_runtime_args_are_caught_when_the_file_loads(tmp_path, runtime, fragment):
    path = write(tmp_path, experiment(runtime_args=runtime))
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    assert fragment in str(info.value) and str(path) in str(info.value)


def test_runtime_args_env_of_strings_and_numbers_is_fine(tmp_path):
    config = load_experiment(
        write(tmp_path, experiment(runtime_args={"env": {"OMP_NUM_THREADS": 1, "A": "b"}}))
    )
    assert config.runtime_args["env"] == {"OMP_NUM_THREADS": 1, "A": "b"}


def test_workingdir_that_is_a_file_is_refused_at_load(tmp_path):
    (tmp_path / "notes.txt").write_text("a file")
    path = write(tmp_path, experiment(workingdir="notes.txt"))
    with pytest.raises(ConfigError, match=r"workingdir .*notes\.txt in .* is a file, not a folder"):
        load_experiment(path)
    # on a node the folder is the node's: a local file of that name is no concern
    assert load_experiment(write(tmp_path, experiment(workingdir="notes.txt", resource="node"))).workingdir


# --- env.ini damage ------------------------------------------------------------------------------


def env_error(tmp_path, content: bytes | str) -> str:
    path = tmp_path / "env.ini"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ConfigError) as info:
        load_env(str(tmp_path))
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


@pytest.mark.parametrize(
    "content, fragment",
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "not a valid env.ini"),
        (b"[Auptim", "not a valid env.ini"),
        (b'[Auptimizer]\ngpu_mapping = {"1": ', "not valid JSON"),
        ("[Auptimizer]\ngpu_mapping = not json\n", "not valid JSON"),
        ('[Auptimizer]\ngpu_mapping = ["0", "1"]\n', "must be a JSON object mapping resource ids"),
        ("[Auptimizer]\ngpu_mapping = 3\n", "not a number"),
        ('[Auptimizer]\ngpu_mapping = {"1": "zero"}\n', "not a GPU card number"),
        ('[Auptimizer]\ngpu_mapping = {"1": [0]}\n', "maps resource 1 to [0]"),
        ('[Auptimizer]\ngpu_mapping = {"1": -1}\n', "maps resource 1 to -1"),
        ('[Auptimizer]\ngpu_mapping = {"one": "0"}\n', "resource id 'one'"),
        (
            '[Auptimizer]\ngpu_mapping = {"1": "0"}\nnode_mapping = {"1": "u@h"}\n',
            "in both gpu_mapping and node_mapping",
        ),
        ('[Auptimizer]\nnode_mapping = {"2": "u@"}\n', "node_mapping in"),
        ("[Auptimizer]\nn_cpu = lots\n", "n_cpu in"),
        ("[Auptimizer]\nn_cpu = -2\n", "n_cpu in"),
    ],
)
def test_damaged_env_ini_is_one_message_naming_the_file(tmp_path, content, fragment):
    assert fragment in env_error(tmp_path, content)


def test_gpu_mapping_takes_card_numbers_uuids_and_lists(tmp_path):
    (tmp_path / "env.ini").write_text(
        '[Auptimizer]\ngpu_mapping = {"1": 0, "2": "1,2", "3": "GPU-8d2c1f7e-aa"}\n'
    )
    assert load_env(str(tmp_path)).gpu_mapping == {"1": "0", "2": "1,2", "3": "GPU-8d2c1f7e-aa"}


@pytest.mark.parametrize(
    "text, fragment",
    [
        ('{"name": "x", "n_samples": NaN}', "holds NaN, which is not a JSON number"),
        ('{"name": "x", "n_samples": -Infinity}', "holds -Infinity, which is not a JSON number"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"name": "x", "resource_args": {"a": ' + "[" * 600 + "]" * 600 + "}}", "more than 32 levels deep"),
    ],
)
def test_json_that_python_reads_but_jobs_cannot_is_refused(tmp_path, text, fragment):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    assert fragment in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (
            {"reconn_wait_time": "x"},
            "resource_args.reconn_wait_time in experiment.json must be a number of seconds",
        ),
        ({"async_timeout": "soon"}, "resource_args.async_timeout"),
        ({"max_retries": []}, "resource_args.max_retries in experiment.json must be a whole number"),
        ({"connection_retry": 1.5}, "resource_args.connection_retry"),
        ({"async_run": "yes"}, "resource_args.async_run in experiment.json must be true or false"),
        ({"region": 5}, "resource_args.region in experiment.json must be a string"),
        ({"address_override": ["127.0.0.1"]}, "resource_args.address_override in experiment.json must be"),
        ({"eid": 1}, "resource_args.eid in experiment.json is set by aup-tui itself — remove it"),
        ({"n_parallel": 4}, "resource_args.n_parallel"),
    ],
)
def test_resource_args_of_the_wrong_type_are_caught_at_load(args, fragment):
    assert fragment in error_of(experiment(resource="node", resource_args=args))


def test_auptimizer_resource_args_load(tmp_path):
    args = {
        "reconn_wait_time": 30,
        "max_retries": 3,
        "async_run": True,
        "async_reconnect": 30,
        "async_timeout": None,
        "shutdown": False,
        "connection_retry": 3,
    }
    assert validate_experiment(experiment(resource="aws", resource_args=args)).resource_args == args
    for override in ("127.0.0.1:2222", {"i-0abc": "127.0.0.1:2222"}):
        assert validate_experiment(experiment(resource="aws", resource_args={"address_override": override}))


@pytest.mark.parametrize(
    "overrides",
    [
        {"parameter_config": [{"name": "a\nb", "type": "float", "range": [0, 1]}]},
        {"proposer": "random\nsequence"},
        {"resource": "node\ncpu"},
    ],
)
def test_line_breaks_in_names_never_make_a_two_line_message(overrides):
    error_of(experiment(**overrides))  # asserts one line


def test_a_bad_host_with_a_line_break_is_one_line(tmp_path):
    assert "'u@\\nx'" in env_error(tmp_path, '[Auptimizer]\nnode_mapping = {"2": "u@\\nx"}\n')
