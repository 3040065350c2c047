"""Jobs on AWS EC2 instances (`resource: "aws"`): an SSH node manager over `aws_mapping`.

An `aws_mapping` entry is `user@<instance-id or host>[:port] [key]`. For an instance id the
manager, when it starts, looks the instance up, checks with a DryRun call that it may start it,
starts it if it is stopped, waits until it runs (boto3's `instance_running` waiter), resolves
its address and waits for SSH; then jobs run on it exactly as on a node. With `shutdown: true`
the instances this run started are stopped again at `finish` (the end of the experiment).

`resource_args` (all optional): `region`, `profile`, `endpoint_url` (else the standard AWS
configuration: environment, `~/.aws/config`, …), `shutdown`, `connection_retry` (how many
times SSH is tried on an instance before giving up, `connection_wait` s apart), `use_private_ip`,
`waiter_delay` / `waiter_max_attempts` (how long a start may take), and `address_override` —
`"host[:port]"` for every instance or `{"i-…": "host[:port]"}` — which replaces the address EC2
reports (also read from the environment variable `AUP_AWS_ADDRESS_OVERRIDE`, same forms, the
mapping as JSON); subclasses may override :meth:`AWSResourceManager.instance_address` instead.

Jobs run as on a node (see `aup_tui_backends.resources.ssh`): `workingdir` is a folder on the instance
(`~` = its home), `script` a file here, copied in before the instance's first job.

boto3 is imported only here, when an AWS manager is made.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from ..env_ini import HostSpec, parse_host
from ..errors import AupError, ConfigError
from ..ssh import NodeError, NodeUnreachableError, is_instance_id
from .ssh import SSHResourceManager

#: a boto3 EC2 client (boto3 ships no type information)
EC2Client = Any

log = logging.getLogger(__name__)

ADDRESS_ENV = "AUP_AWS_ADDRESS_OVERRIDE"


class AWSError(AupError):
    """Something about AWS a person has to fix (the message says what)."""


class AWSCredentialsError(AWSError):
    pass


class AWSPermissionError(AWSError):
    pass


class InstanceNotFoundError(AWSError):
    pass


class InstanceStuckError(AWSError):
    pass


class SSHNotUpError(AWSError):
    pass


class AWSResourceManager(SSHResourceManager):
    """`AWSResourceManager(*args, **kwargs)`: `SSHResourceManager` over `aws_mapping`."""

    rtype = "aws"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if len(args) < 3:
            kwargs.setdefault("key", "aws_mapping")
        self.region = kwargs.pop("region", None) or kwargs.pop("region_name", None)
        self.profile = kwargs.pop("profile", None) or kwargs.pop("profile_name", None)
        self.endpoint_url = kwargs.pop("endpoint_url", None)
        self.shutdown = bool(kwargs.pop("shutdown", False))
        self.connection_retry = max(1, int(kwargs.pop("connection_retry", 3)))
        self.connection_wait = max(0.0, float(kwargs.pop("connection_wait", 10.0)))
        self.use_private_ip = bool(kwargs.pop("use_private_ip", False))
        self.waiter_delay = max(1, int(round(float(kwargs.pop("waiter_delay", 5)))))
        self.waiter_max_attempts = max(1, int(kwargs.pop("waiter_max_attempts", 60)))
        self.address_override = kwargs.pop("address_override", None)
        self.started_instances: list[str] = []  # started by this run (stopped at finish if shutdown)
        self.instances: dict[int, str] = {}  # rid → instance id
        self._ec2_client: EC2Client | None = None
        try:
            super().__init__(*args, **kwargs)
            if self.instances:
                self._wait_for_ssh()
        except BaseException:
            if self.shutdown and self.started_instances:
                self.stop_started_instances()
            pool = getattr(self, "pool", None)
            if pool is not None and getattr(self, "_own_pool", False):
                pool.close()
            raise

    # -- EC2 ------------------------------------------------------------------------------

    @property
    def ec2(self) -> EC2Client:
        """The boto3 EC2 client (made on first use)."""
        if self._ec2_client is None:
            import boto3
            import botocore.config
            import botocore.exceptions

            try:
                session = boto3.session.Session(profile_name=self.profile, region_name=self.region)
            except botocore.exceptions.ProfileNotFound:
                raise AWSCredentialsError(
                    f"AWS profile {self.profile!r} not found: add it with `aws configure --profile {self.profile}` "
                    "or fix resource_args.profile"
                ) from None
            if not session.region_name:
                raise ConfigError(
                    'no AWS region set: add resource_args.region (e.g. "us-east-1"), '
                    "or set AWS_DEFAULT_REGION or a region in ~/.aws/config"
                )
            config = botocore.config.Config(connect_timeout=10, read_timeout=30, retries={"max_attempts": 3})
            self._ec2_client = session.client("ec2", endpoint_url=self.endpoint_url, config=config)
        return self._ec2_client

    def _call(self, what: str, fn: Callable[..., Any], instance_id: str | None = None, **params: Any) -> Any:
        """One EC2 call with its errors turned into one clear sentence each."""
        import botocore.exceptions

        try:
            return fn(**params)
        except botocore.exceptions.NoCredentialsError:
            raise AWSCredentialsError(
                "no AWS credentials found: run `aws configure`, set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or name a profile in resource_args.profile"
            ) from None
        except botocore.exceptions.ClientError as exc:
            err = exc.response.get("Error", {})
            code, message = err.get("Code", ""), err.get("Message", str(exc))
            if code == "DryRunOperation":
                raise
            if code in ("InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"):
                raise InstanceNotFoundError(
                    f"EC2 instance {instance_id} not found in region {self.ec2.meta.region_name}: "
                    "fix its id in aws_mapping of env.ini, or set resource_args.region"
                ) from None
            if code in (
                "AuthFailure",
                "InvalidClientTokenId",
                "SignatureDoesNotMatch",
                "UnrecognizedClientException",
            ):
                raise AWSCredentialsError(
                    f"AWS rejected the credentials ({code}): check them with `aws sts get-caller-identity`"
                ) from None
            if code in ("UnauthorizedOperation", "AccessDenied", "AccessDeniedException"):
                raise AWSPermissionError(
                    f"no permission to {what}"
                    + (f" {instance_id}" if instance_id else "")
                    + f" ({code}: {_first_sentence(message)}): grant it to these credentials in IAM"
                ) from None
            raise AWSError(
                f"EC2 could not {what}"
                + (f" {instance_id}" if instance_id else "")
                + f": {code or 'error'}: {_first_sentence(message)}"
            ) from None
        except botocore.exceptions.EndpointConnectionError as exc:
            raise AWSError(
                f"cannot reach EC2 at {exc.kwargs.get('endpoint_url', 'its endpoint')}: "
                "check the network, resource_args.region and endpoint_url"
            ) from None
        except botocore.exceptions.BotoCoreError as exc:
            raise AWSError(f"EC2 could not {what}: {exc}") from None

    def describe(self, instance_id: str) -> dict[str, Any]:
        answer = self._call(
            "describe instance", self.ec2.describe_instances, instance_id, InstanceIds=[instance_id]
        )
        for reservation in answer.get("Reservations", []):
            for instance in reservation.get("Instances", []):
                if instance.get("InstanceId") == instance_id:
                    return dict(instance)
        raise InstanceNotFoundError(
            f"EC2 instance {instance_id} not found in region {self.ec2.meta.region_name}: "
            "fix its id in aws_mapping of env.ini, or set resource_args.region"
        )

    def _dry_run(self, what: str, fn: Callable[..., Any], instance_id: str) -> None:
        """Check permission for `fn` on the instance: EC2 answers DryRunOperation when allowed."""
        import botocore.exceptions

        try:
            self._call(f"{what} (DryRun check for)", fn, instance_id, InstanceIds=[instance_id], DryRun=True)
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "DryRunOperation":
                return
            raise
        except AWSPermissionError as exc:
            raise AWSPermissionError(
                f"no permission to {what} EC2 instance {instance_id} (the DryRun check was "
                f"denied): allow ec2:{_action(what)} for these credentials in IAM"
            ) from exc

    def _wait(self, waiter_name: str, instance_id: str, goal: str) -> dict[str, Any]:
        import botocore.exceptions

        waiter = self.ec2.get_waiter(waiter_name)
        try:
            waiter.wait(
                InstanceIds=[instance_id],
                WaiterConfig={"Delay": self.waiter_delay, "MaxAttempts": self.waiter_max_attempts},
            )
        except botocore.exceptions.WaiterError as exc:
            last = (exc.last_response or {}).get("Reservations") or [{}]
            state = ((last[0].get("Instances") or [{}])[0].get("State") or {}).get("Name")
            error = (exc.last_response or {}).get("Error", {}).get("Code")
            if error in ("UnauthorizedOperation", "AccessDenied", "AuthFailure"):
                raise AWSPermissionError(
                    f"no permission to describe EC2 instance {instance_id} while waiting "
                    f"for it: allow ec2:DescribeInstances in IAM"
                ) from None
            waited = self.waiter_delay * self.waiter_max_attempts
            if "Max attempts exceeded" in str(exc):
                raise InstanceStuckError(
                    f"EC2 instance {instance_id} is still {state or 'not ' + goal} after {waited} s: "
                    "check it in the EC2 console, or allow more time with resource_args.waiter_max_attempts"
                ) from None
            raise InstanceStuckError(
                f"EC2 instance {instance_id} went to state '{state}' instead of {goal}: "
                "check it in the EC2 console"
            ) from None
        return self.describe(instance_id)

    def ensure_running(self, instance_id: str) -> dict[str, Any]:
        """Start the instance if needed and wait until it runs; returns its description."""
        instance = self.describe(instance_id)
        state = instance.get("State", {}).get("Name")
        if state in ("shutting-down", "terminated"):
            raise InstanceStuckError(
                f"EC2 instance {instance_id} is {state} and cannot be started: "
                "replace it in aws_mapping of env.ini"
            )
        if state == "running":
            return instance
        if state == "stopping":
            self._wait("instance_stopped", instance_id, "stopped")
            state = "stopped"
        if state == "stopped":
            self._dry_run("start", self.ec2.start_instances, instance_id)
            if self.shutdown:
                self._dry_run("stop", self.ec2.stop_instances, instance_id)
            self._call("start instance", self.ec2.start_instances, instance_id, InstanceIds=[instance_id])
            self.started_instances.append(instance_id)
            log.info("started EC2 instance %s", instance_id)
        return self._wait("instance_running", instance_id, "running")

    def instance_address(self, instance_id: str, instance: dict[str, Any]) -> tuple[str, int | None]:
        """(host, port or None for the mapping's port) to reach the instance over SSH."""
        override = self._override_for(instance_id)
        if override:
            host, _, port = override.rpartition(":") if override.count(":") == 1 else (override, "", "")
            if not host:
                host, port = override, ""
            return host, int(port) if port else None
        keys = (
            ("PrivateIpAddress", "PrivateDnsName")
            if self.use_private_ip
            else ("PublicDnsName", "PublicIpAddress")
        )
        for key in keys:
            value = instance.get(key)
            if value:
                return value, None
        raise AWSError(
            f"EC2 instance {instance_id} has no {'private' if self.use_private_ip else 'public'} "
            "address: give it a public IP, or set resource_args.use_private_ip when running "
            "from inside its VPC"
        )

    def _override_for(self, instance_id: str) -> str | None:
        override = self.address_override
        if override is None and os.environ.get(ADDRESS_ENV):
            text = os.environ[ADDRESS_ENV].strip()
            try:
                override = json.loads(text) if text.startswith("{") else text
            except json.JSONDecodeError:
                raise ConfigError(
                    f'{ADDRESS_ENV} is not valid JSON: write it as host[:port] or {{"i-…": "host[:port]"}}'
                ) from None
        if isinstance(override, dict):
            value = override.get(instance_id)
            return str(value) if value else None
        return str(override) if override else None

    # -- nodes ----------------------------------------------------------------------------

    def _resolve_nodes(self, mapping: dict[int, str]) -> dict[int, tuple[str, HostSpec]]:
        nodes: dict[int, tuple[str, HostSpec]] = {}
        resolved: dict[str, tuple[str, int | None]] = {}
        for rid, value in sorted(mapping.items()):
            spec = parse_host(value)
            if is_instance_id(spec.host):
                iid = spec.host
                if iid not in resolved:
                    instance = self.ensure_running(iid)
                    resolved[iid] = self.instance_address(iid, instance)
                host, port = resolved[iid]
                self.instances[rid] = iid
                spec = HostSpec(user=spec.user, host=host, port=port or spec.port, key=spec.key)
            nodes[rid] = (self.pool_name(rid), spec)
        return nodes

    def _wait_for_ssh(self) -> None:
        """Each instance answers on SSH within connection_retry tries, or is reported."""
        failures: dict[int, str] = {}
        for rid, name in self.names.items():
            if rid not in self.instances:
                continue
            last = ""
            for attempt in range(self.connection_retry):
                try:
                    self.pool.get_client(name)
                    last = ""
                    break
                except NodeError as exc:
                    last = str(exc)
                    if not _retryable(exc):
                        break
                    if attempt + 1 < self.connection_retry:
                        time.sleep(self.connection_wait)
            if last:
                failures[rid] = last
        if not failures:
            return
        messages = []
        for rid, error in failures.items():
            iid = self.instances[rid]
            messages.append(
                f"EC2 instance {iid} is running at {self.node_label(rid)} but SSH is not up after "
                f"{self.connection_retry} {'try' if self.connection_retry == 1 else 'tries'} "
                f"({error}): wait for it to boot or allow more with resource_args.connection_retry"
            )
        if len(failures) == len(self.instances) and len(self.instances) == len(self.names):
            raise SSHNotUpError(messages[0] if len(messages) == 1 else "; ".join(messages))
        for message in messages:
            self._notice(message, "warning")

    def finish(  # type: ignore[override]  # the CPU managers' order (maximize first), as CPUResourceManager
        self, maximize: bool = True, status: str = "FINISHED"
    ) -> list[int | float] | None:
        try:
            return super().finish(maximize=maximize, status=status)
        finally:
            if self.shutdown and self.started_instances:
                self.stop_started_instances()

    def stop_started_instances(self) -> None:
        """Stop the instances this run started (explicitly, at the end of the experiment)."""
        ids, self.started_instances = list(self.started_instances), []
        try:
            self._call("stop instances", self.ec2.stop_instances, ", ".join(ids), InstanceIds=ids)
            log.info("stopped EC2 instances %s", ", ".join(ids))
        except AupError as exc:
            self._notice(f"could not stop EC2 instances {', '.join(ids)}: {exc}", "error")


def _retryable(exc: NodeError) -> bool:
    return isinstance(exc, NodeUnreachableError) or "Error reading SSH protocol banner" in str(exc)


def _first_sentence(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= 200 else text[:200] + "…"


def _action(what: str) -> str:
    return {"start": "StartInstances", "stop": "StopInstances"}.get(what, what)
