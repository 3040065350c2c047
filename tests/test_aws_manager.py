"""The AWS EC2 manager against a real moto server on 127.0.0.1, and a real sshd as the instance."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest
from aup_tui_backends import Experiment
from aup_tui_backends.config import load_experiment
from aup_tui_backends.resources import get_resource_manager
from aup_tui_backends.resources.aws import (
    AWSCredentialsError,
    AWSPermissionError,
    AWSResourceManager,
    InstanceNotFoundError,
    InstanceStuckError,
    SSHNotUpError,
)
from aup_tui_backends.setup import init_aup
from aup_tui_backends.store import TinyDBConnector
from helpers import ROOT, write_experiment
from sshd import free_port, sshd_factory, sshd_servers  # noqa: F401  (fixtures)

boto3 = pytest.importorskip("boto3")
pytest.importorskip("moto.server")

REGION = "us-east-1"
FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
}
FAST = {
    "reconn_wait_time": 0.2,
    "max_retries": 1,
    "kill_grace": 0.5,
    "connect_timeout": 5,
    "waiter_delay": 1,
    "waiter_max_attempts": 3,
    "connection_retry": 2,
    "connection_wait": 0.1,
}


@pytest.fixture(scope="module")
def moto_url():
    """A moto server (EC2, IAM) on a free loopback port for this module, with fake credentials."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    saved = {k: os.environ.get(k) for k in FAKE_ENV}
    os.environ.update(FAKE_ENV)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def ec2(moto_url):
    return boto3.client("ec2", endpoint_url=moto_url, region_name=REGION)


def new_instance(ec2, stopped: bool = True) -> str:
    image = ec2.describe_images()["Images"][0]["ImageId"]
    iid = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    if stopped:
        ec2.stop_instances(InstanceIds=[iid])
    return iid


def state_of(ec2, iid: str) -> str:
    return ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["State"]["Name"]


def aws_folder(tmp_path: Path, entries: list[str], server=None) -> Path:
    folder = tmp_path / "work"
    folder.mkdir()
    init_aup(str(folder / ".aup"), aws=entries)
    if server is not None:
        server.factory.write_known_hosts(folder / "known_hosts", [server])
    else:
        (folder / "known_hosts").write_text("")
    return folder


def make_manager(folder: Path, moto_url: str, **kwargs) -> AWSResourceManager:
    options = {
        "endpoint_url": moto_url,
        "region": REGION,
        "known_hosts": str(folder / "known_hosts"),
        **FAST,
        **kwargs,
    }
    connector = TinyDBConnector(str(folder / ".aup"))
    return get_resource_manager("aws", connector, 1, auppath=str(folder / ".aup"), eid=1, **options)


def entry(server, iid: str) -> str:
    """`user@i-… /key` for an instance whose SSH is `server`."""
    user_host, key = server.mapping_value().split()
    return f"{user_host.split('@')[0]}@{iid} {key}"


# -- end to end ------------------------------------------------------------------------------------


def test_a_stopped_instance_is_started_runs_the_jobs_and_is_stopped_at_the_end(
    moto_url, ec2, sshd_servers, tmp_path
):
    server = sshd_servers[10]
    iid = new_instance(ec2)
    folder = aws_folder(tmp_path, [entry(server, iid)], server)
    shutil.copy(ROOT / "examples" / "rosenbrock" / "rosenbrock.py", folder / "rosenbrock.py")
    path = write_experiment(
        folder,
        script="./rosenbrock.py",
        resource="aws",
        n_samples=4,
        n_parallel=1,
        target="min",
        parameter_config=[
            {"name": "x", "range": [-2, 2], "type": "float"},
            {"name": "y", "range": [-2, 2], "type": "float"},
            {"name": "delay", "range": [0.01], "type": "choice"},
            {"name": "steps", "range": [2], "type": "choice"},
        ],
        resource_args={
            "endpoint_url": moto_url,
            "region": REGION,
            "shutdown": True,
            "address_override": {iid: f"127.0.0.1:{server.port}"},
            "known_hosts": str(folder / "known_hosts"),
            **FAST,
        },
    )
    exp = Experiment(load_experiment(path), auppath=str(folder / ".aup"))
    result = exp.run()
    assert result.status == "FINISHED", exp.connector.errors(result.eid)
    jobs = exp.connector.jobs(result.eid)
    assert len(jobs) == 4 and all(j["status"] == "FINISHED" and j["score"] is not None for j in jobs)
    assert all(iid in j["resource"] for j in jobs)
    assert state_of(ec2, iid) == "stopped"  # shutdown: true stops what this run started


def test_a_running_instance_is_used_as_it_is_and_left_running(
    moto_url, ec2, sshd_servers, tmp_path, monkeypatch
):
    server = sshd_servers[11]
    iid = new_instance(ec2, stopped=False)
    folder = aws_folder(tmp_path, [entry(server, iid)], server)
    monkeypatch.setenv("AUP_AWS_ADDRESS_OVERRIDE", json.dumps({iid: f"127.0.0.1:{server.port}"}))
    rm = make_manager(folder, moto_url, shutdown=True)
    try:
        assert rm.started_instances == []
        rid = next(iter(rm.names))
        assert rm.specs[rid].port == server.port and rm.pool.run(rm.names[rid], "echo hi")[1] == "hi\n"
    finally:
        rm.finish()
    assert state_of(ec2, iid) == "running"


def test_default_address_is_the_public_dns_name(moto_url, ec2):
    iid = new_instance(ec2, stopped=False)
    instance = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    rm = AWSResourceManager.__new__(AWSResourceManager)
    rm.address_override, rm.use_private_ip = None, False
    assert rm.instance_address(iid, instance) == (instance["PublicDnsName"], None)
    rm.use_private_ip = True
    assert rm.instance_address(iid, instance) == (instance["PrivateIpAddress"], None)
    rm.address_override = "127.0.0.1:2222"
    assert rm.instance_address(iid, instance) == ("127.0.0.1", 2222)


# -- the errors a user meets -----------------------------------------------------------------------


def test_unknown_instance_id(moto_url, tmp_path):
    folder = aws_folder(tmp_path, ["ubuntu@i-0123456789abcdef0"])
    with pytest.raises(
        InstanceNotFoundError,
        match=r"EC2 instance i-0123456789abcdef0 not found in region us-east-1: "
        r"fix its id in aws_mapping",
    ):
        make_manager(folder, moto_url)


def test_no_credentials(moto_url, tmp_path, monkeypatch):
    for key in FAKE_ENV:
        if key != "AWS_DEFAULT_REGION":
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    folder = aws_folder(tmp_path, ["ubuntu@i-0123456789abcdef0"])
    with pytest.raises(AWSCredentialsError, match="no AWS credentials found: run `aws configure`"):
        make_manager(folder, moto_url)


def test_unknown_profile(moto_url, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    folder = aws_folder(tmp_path, ["ubuntu@i-0123456789abcdef0"])
    with pytest.raises(AWSCredentialsError, match="AWS profile 'nobody' not found"):
        make_manager(folder, moto_url, profile="nobody")


def test_dry_run_denied(moto_url, ec2, tmp_path):
    import requests

    iid = new_instance(ec2)
    iam = boto3.client("iam", endpoint_url=moto_url, region_name=REGION)
    iam.create_user(UserName="viewer")
    iam.put_user_policy(
        UserName="viewer",
        PolicyName="describe-only",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": ["ec2:Describe*"], "Resource": "*"}],
            }
        ),
    )
    key = iam.create_access_key(UserName="viewer")["AccessKey"]
    folder = aws_folder(tmp_path, [f"ubuntu@{iid}"])
    requests.post(f"{moto_url}/moto-api/reset-auth", data=b"0")  # moto checks IAM from now on
    try:
        env = {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
        saved = {k: os.environ.get(k) for k in (*env, "AWS_SESSION_TOKEN")}
        os.environ.update(env)
        os.environ.pop("AWS_SESSION_TOKEN", None)
        try:
            with pytest.raises(
                AWSPermissionError,
                match=rf"no permission to start EC2 instance {iid} "
                r"\(the DryRun check was denied\): allow ec2:StartInstances",
            ):
                make_manager(folder, moto_url)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    finally:
        requests.post(f"{moto_url}/moto-api/reset-auth", data=b"inf")
    assert state_of(ec2, iid) == "stopped"  # nothing was started


def test_instance_stuck_pending(moto_url, ec2, tmp_path):
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ec2.models import ec2_backends

    iid = new_instance(ec2, stopped=False)
    instance = ec2_backends[DEFAULT_ACCOUNT_ID][REGION].get_instance(iid)
    instance._state.name, instance._state.code = "pending", 0  # the server's own state: it never boots
    folder = aws_folder(tmp_path, [f"ubuntu@{iid}"])
    with pytest.raises(
        InstanceStuckError,
        match=rf"EC2 instance {iid} is still pending after 3 s: "
        "check it in the EC2 console",
    ):
        make_manager(folder, moto_url)


def test_terminated_instance(moto_url, ec2, tmp_path):
    iid = new_instance(ec2, stopped=False)
    ec2.terminate_instances(InstanceIds=[iid])
    folder = aws_folder(tmp_path, [f"ubuntu@{iid}"])
    with pytest.raises(InstanceStuckError, match=rf"EC2 instance {iid} is terminated and cannot be started"):
        make_manager(folder, moto_url)


def test_ssh_not_up_after_start(moto_url, ec2, tmp_path):
    iid = new_instance(ec2)
    closed = free_port()  # nothing listens there: the instance's sshd "has not started yet"
    folder = aws_folder(tmp_path, [f"ubuntu@{iid}"])
    with pytest.raises(
        SSHNotUpError,
        match=rf"EC2 instance {iid} is running at ubuntu@127.0.0.1:{closed} but SSH "
        r"is not up after 2 tries \(.*connection refused\)",
    ):
        make_manager(folder, moto_url, shutdown=True, address_override=f"127.0.0.1:{closed}")
    assert state_of(ec2, iid) == "stopped"  # started for nothing, so stopped again (shutdown)


def test_no_instances_is_a_clear_error(moto_url, tmp_path):
    init_aup(str(tmp_path / ".aup"), cpu=1)
    with pytest.raises(
        Exception,
        match=r"no instances in aws_mapping .*`aup-tui init --overwrite --aws "
        r"USER@INSTANCE_ID\[:PORT\]`.* e\.g\. `aup-tui init --overwrite --aws "
        r"ubuntu@i-0123456789abcdef0`",
    ):
        get_resource_manager(
            "aws",
            TinyDBConnector(str(tmp_path / ".aup")),
            1,
            auppath=str(tmp_path / ".aup"),
            endpoint_url=moto_url,
            region=REGION,
        )
