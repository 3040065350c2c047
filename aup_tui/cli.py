"""The `aup-tui` command line (a contract: see DESIGN.md).

Exit status: 0 finished, 130 stopped by the user, 1 on an error (one line on stderr) or when
the experiment ended FAILED. Textual and the engine's heavy modules load only when needed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .exit_codes import EXIT_ERROR, EXIT_OK, EXIT_STOPPED

if TYPE_CHECKING:  # the store loads only for commands that use it
    from aup_tui_backends.store import TinyDBConnector

AUP_HELP = "the .aup folder to use (default: ./.aup, then ~/.aup)"

#: Options every command takes, before or after the command (`aup-tui --aup X status` =
#: `aup-tui status --aup X`): (flags, argparse keywords). Given in both places, `_merge_global`
#: decides; each lands in its own attribute, since a subparser's default would otherwise
#: overwrite the value given before the command.
GLOBAL_OPTIONS: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = (
    (
        ("--aup",),
        {"metavar": "PATH", "help": AUP_HELP + "; before or after the command (both: they must agree)"},
    ),
    (
        ("--no-color",),
        {
            "action": "store_true",
            "help": "no colour in any output, as with the NO_COLOR environment variable",
        },
    ),
)


class _VersionAction(argparse.Action):
    """`--version`: `aup-tui X.Y.Z`, read from the installed distribution only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kw: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kw)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kw: Any) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            text = version("aup-tui")
        except PackageNotFoundError:  # run from a checkout that was never installed
            text = "(not installed: version unknown)"
        print(f"aup-tui {text}")
        parser.exit()


def _add_global_options(parser: argparse.ArgumentParser, suffix: str) -> None:
    for flags, kw in GLOBAL_OPTIONS:
        dest = flags[0].lstrip("-").replace("-", "_") + suffix
        parser.add_argument(*flags, dest=dest, default=None, **kw)
    parser.add_argument("--version", action=_VersionAction, help="print aup-tui's version and exit")


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    _add_global_options(common, "_after")
    p = argparse.ArgumentParser(
        prog="aup-tui",
        description="Run Auptimizer-style hyperparameter experiments and watch them live.",
        epilog="Without a command: the dashboard of the latest experiment in ./.aup.",
    )
    _add_global_options(p, "")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    init = sub.add_parser("init", parents=[common], help="create .aup/ (env.ini + store) here")
    init.add_argument("--cpu", type=int, default=0, metavar="N", help="N local CPU slots")
    init.add_argument("--gpu", metavar="F|LIST", help="GPU card indices, e.g. 0,0,1 (two slots on card 0)")
    init.add_argument(
        "--node", metavar="F|LIST", help="SSH nodes: user@host[:port] [key], comma-separated or a file"
    )
    init.add_argument("--aws", metavar="F|LIST", help="EC2 hosts: user@<instance-id|host>[:port] [key]")
    init.add_argument("--passive", action="store_true", help="a passive resource: you run each job by hand")
    init.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="jobs as Ray tasks: on the cluster at ADDRESS (auto: the one this machine is in), "
        "or without ADDRESS on a local Ray started for each run",
    )
    init.add_argument(
        "--overwrite", action="store_true", help="replace an existing env.ini and resource list"
    )

    # what `run`, `resume` and `rerun` share: how the experiment is shown while it runs
    headless = argparse.ArgumentParser(add_help=False)
    headless.add_argument(
        "--headless",
        action="store_true",
        help="no TUI: a progress bar and a summary (also what a run without a terminal does)",
    )
    run = sub.add_parser("run", parents=[common, headless], help="run an experiment")
    run.add_argument(
        "experiment", metavar="EXPERIMENT.json", help="the experiment file (Auptimizer's format)"
    )

    resume = sub.add_parser(
        "resume",
        parents=[common, headless],
        help="continue a stopped, failed or interrupted experiment: the rest of its budget",
        description="Continues the experiment under its own id: jobs that ran to their end are "
        "kept and its proposer is rebuilt from them; failed and interrupted jobs, and those "
        "stopped with it, run again (as their next attempt), then the rest of n_samples.",
    )
    resume.add_argument(
        "eid",
        nargs="?",
        type=int,
        metavar="EID",
        help="the experiment (default: the latest that can be resumed)",
    )

    rerun = sub.add_parser(
        "rerun",
        parents=[common, headless],
        help="run a finished experiment's failed jobs again, in the same experiment",
        description="Each failed or interrupted job's config runs again as that job's next "
        "attempt (its row, attempts and logs stay together); the experiment ends again as they do.",
    )
    rerun.add_argument(
        "eid",
        nargs="?",
        type=int,
        metavar="EID",
        help="the experiment (default: the latest with failed jobs to run again)",
    )
    rerun.add_argument(
        "--failed", action="store_true", required=True, help="run the failed jobs again (required)"
    )

    watch = sub.add_parser(
        "watch", parents=[common], help="the dashboard of an experiment run by another process"
    )
    watch.add_argument("eid", nargs="?", type=int, metavar="EID", help="the experiment (default: the latest)")
    watch.add_argument(
        "--readonly",
        action="store_true",
        help="look only: no key stops a job or the experiment or answers a passive job",
    )

    stop = sub.add_parser("stop", parents=[common], help="ask a running job or experiment to stop")
    group = stop.add_mutually_exclusive_group(required=True)
    group.add_argument("--job", type=int, metavar="JID", help="the job to stop")
    group.add_argument(
        "--experiment", type=int, metavar="EID", help="the experiment to stop, with its running jobs"
    )

    status = sub.add_parser(
        "status", parents=[common], help="an experiment's status, job counts and best job"
    )
    status.add_argument(
        "eid", nargs="?", type=int, metavar="EID", help="the experiment (default: the latest)"
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")

    export = sub.add_parser(
        "export",
        parents=[common],
        help="write an experiment's jobs as CSV or JSON: one row per job",
        description="One row per job: jid, status, score, each parameter and multi-result label as "
        "a column, resource, attempt, start and end (ISO 8601, local time), duration (seconds).",
    )
    export.add_argument(
        "eid", nargs="?", type=int, metavar="EID", help="the experiment (default: the latest)"
    )
    export.add_argument(
        "--format",
        choices=("csv", "json"),
        help="csv (a header row) or json (a list of objects); default: from -o's extension, else csv",
    )
    export.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="where to write (- for stdout); default: <experiment name>-e<EID>.<format> here",
    )

    res = sub.add_parser("resources", parents=[common], help="list resources and their status")
    res.add_argument("--free", action="store_true", help="free resources left taken by dead processes")
    res.add_argument("--probe", action="store_true", help="check each node over SSH and the local GPUs once")
    res.add_argument(
        "--timeout", type=float, default=5.0, metavar="S", help="probe connect/command timeout in seconds"
    )
    res.add_argument(
        "--accept-new-hosts",
        action="store_true",
        help="trust and save host keys not yet in ~/.ssh/known_hosts (changed keys are still refused)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    if hasattr(signal, "SIGPIPE") and argv is None:
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `aup-tui status --json | head` ends quietly
    args = _parser().parse_args(argv)
    from aup_tui_backends.errors import AupError

    try:
        _merge_global(args)
        if args.no_color:
            os.environ["NO_COLOR"] = "1"  # Textual reads it when the app starts
        handler = {
            None: cmd_dashboard,
            "init": cmd_init,
            "run": cmd_run,
            "resume": cmd_resume,
            "rerun": cmd_rerun,
            "watch": cmd_watch,
            "stop": cmd_stop,
            "status": cmd_status,
            "resources": cmd_resources,
            "export": cmd_export,
        }[args.command]
        return handler(args)
    except AupError as exc:
        print(f"aup-tui: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_STOPPED


def _merge_global(args: argparse.Namespace) -> None:
    """Each global option from its two places (before and after the command) into one attribute."""
    args.aup = _aup_option(args.aup, getattr(args, "aup_after", None))
    args.no_color = bool(args.no_color or getattr(args, "no_color_after", None))


def _aup_option(before: str | None, after: str | None) -> str | None:
    """One `--aup` from its two places (before and after the command); different folders in the
    two are refused rather than guessed between, since a stop sent to the wrong one does harm."""
    if before is None or after is None:
        return after if before is None else before
    from aup_tui_backends.errors import AupError

    if os.path.abspath(os.path.expanduser(before)) != os.path.abspath(os.path.expanduser(after)):
        raise AupError(
            f"--aup is given twice with different folders ({before} before the command, "
            f"{after} after it) — give it once"
        )
    return after


def _has_terminal() -> bool:
    """Whether the TUI can run here: it reads keys from stdin and draws on stderr (Textual's
    output stream), so both must be a terminal; elsewhere it would write escape codes to a file."""
    err = sys.__stderr__
    return sys.stdin is not None and sys.stdin.isatty() and err is not None and err.isatty()


def _require_terminal(what: str) -> None:
    from aup_tui_backends.errors import AupError

    if not _has_terminal():
        raise AupError(
            f"{what} needs a terminal (stdin and stderr are not both one) — `aup-tui status` "
            "prints an experiment's state as text"
        )


def _connector(args: argparse.Namespace) -> tuple[str, TinyDBConnector]:
    from aup_tui_backends.config import find_env, load_env
    from aup_tui_backends.setup import sync_resources
    from aup_tui_backends.store import TinyDBConnector

    auppath = find_env(args.aup)
    env = load_env(auppath)  # a damaged env.ini is one message before the store opens
    connector = TinyDBConnector(auppath)
    sync_resources(env, connector)
    if args.command != "resources":  # `resources --free` reports what it reclaims itself
        connector.recover()
    return auppath, connector


def _experiment(connector: TinyDBConnector, eid: int | None) -> dict[str, Any]:
    """Experiment `eid`'s record (the latest without one); a missing one is the person's error."""
    from aup_tui_backends.errors import AupError

    if eid is None:
        latest = connector.latest_experiment()
        if latest is None:
            raise AupError("no experiment in this .aup yet — start one with `aup-tui run experiment.json`")
        return latest
    exp = connector.get_experiment(eid)
    if exp is None:
        raise AupError(f"no experiment {eid} in this .aup — `aup-tui status` shows the latest")
    return exp


# -- commands -----------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    from aup_tui_backends.setup import init_aup, read_list

    auppath = args.aup or ".aup"
    env = init_aup(
        auppath,
        cpu=args.cpu,
        gpu=read_list(args.gpu, "gpu") if args.gpu else None,
        node=read_list(args.node, "node") if args.node else None,
        aws=read_list(args.aws, "aws") if args.aws else None,
        passive=args.passive,
        overwrite=args.overwrite,
        ray=args.ray,
    )
    from aup_tui_backends.store import TinyDBConnector

    connector = TinyDBConnector(env.auppath)
    print(f"{env.path}: {_describe_resources(connector.resources())}")
    connector.close()
    return EXIT_OK


def _describe_resources(resources: list[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for r in resources:
        counts[r["type"]] = counts.get(r["type"], 0) + 1
    return (
        ", ".join(f"{n} {t}" for t, n in counts.items())
        or "no resources (add some: `aup-tui init --overwrite --cpu N`, or --gpu 0,1, …)"
    )


def cmd_run(args: argparse.Namespace) -> int:
    from aup_tui_backends.config import load_experiment
    from aup_tui_backends.setup import require_resources

    config = load_experiment(args.experiment)
    auppath, connector = _connector(args)
    try:
        require_resources(config.resource, auppath, connector)  # else it would wait forever
    except Exception:
        connector.close()
        raise
    return _run_shown(args.headless, auppath, connector, config)


def cmd_resume(args: argparse.Namespace) -> int:
    from aup_tui_backends.resume import plan_resume, why_not_resumable

    return _continue(args, plan_resume, why_not_resumable, "to resume")


def cmd_rerun(args: argparse.Namespace) -> int:
    from aup_tui_backends.resume import plan_rerun, why_no_rerun

    return _continue(args, plan_rerun, why_no_rerun, "with failed jobs to run again")


def _continue(args: argparse.Namespace, plan: Any, why_not: Any, what: str) -> int:
    """`resume` and `rerun`: plan the run of experiment EID (or the latest one `why_not` allows),
    then run it as `run` does (the dashboard, or headless)."""
    from aup_tui_backends.errors import AupError
    from aup_tui_backends.resume import latest
    from aup_tui_backends.setup import require_resources

    auppath, connector = _connector(args)
    try:
        if args.eid is None:
            found = latest(connector, why_not)
            if found is None:
                newest = connector.latest_experiment()
                raise AupError(why_not(connector, newest) if newest else f"no experiment {what} in this .aup")
            args.eid = found["eid"]
        ready = plan(connector, args.eid)
        require_resources(ready.config.resource, auppath, connector)
    except Exception:
        connector.close()
        raise
    print(_plan_line(ready), file=sys.stderr)
    return _run_shown(args.headless, auppath, connector, ready.config, plan=ready)


def _run_shown(headless: bool, auppath: str, connector: Any, config: Any, plan: Any = None) -> int:
    """Run the experiment (or the `resume`/`rerun` plan) in the dashboard, or headless when
    asked or when there is no terminal; SIGTERM/SIGHUP stop it like Ctrl-C (exit 130)."""
    from .signals import stop_signals

    stop_signals.install()
    if not headless and not _has_terminal():
        print("aup-tui: no terminal for the dashboard: running headless", file=sys.stderr)
    elif not headless:
        from .app import run_app

        if plan is not None:
            return run_app(auppath, connector=connector, plan=plan)
        return run_app(auppath, connector=connector, experiment=config)
    from .headless import run_headless

    return run_headless(config, auppath, connector, plan=plan)


def _plan_line(plan: Any) -> str:
    """What `resume`/`rerun` is about to do, in one line."""
    jids = plan.rerun_jids
    again = f"; job(s) {', '.join(map(str, jids))} run again as their next attempt" if jids else ""
    if plan.kind == "rerun":
        return f"re-running {plan.to_run} failed job(s) of experiment {plan.eid} '{plan.config.name}'{again}"
    return (
        f"resuming experiment {plan.eid} '{plan.config.name}' ({plan.status.lower()}): "
        f"{plan.finished} of {plan.n_samples} finished, {plan.to_run} to run{again}"
    )


def cmd_dashboard(args: argparse.Namespace) -> int:
    from aup_tui_backends.config import find_env
    from aup_tui_backends.errors import ConfigError

    from .app import run_app
    from .signals import stop_signals

    try:
        find_env(args.aup)
    except ConfigError:
        _require_terminal("the dashboard")
        stop_signals.install()  # SIGTERM/SIGHUP close the app cleanly (terminal restored), exit 130
        return run_app(args.aup)  # no .aup yet: the app says how to make one
    auppath, connector = _connector(args)  # also reclaims what dead processes left behind
    _require_terminal("the dashboard")
    stop_signals.install()
    return run_app(auppath, connector=connector)


def cmd_watch(args: argparse.Namespace) -> int:
    from .app import run_app
    from .signals import stop_signals

    auppath, connector = _connector(args)
    eid = _experiment(connector, args.eid)["eid"]
    _require_terminal("`aup-tui watch`")
    stop_signals.install()  # SIGTERM/SIGHUP close the app cleanly; the watched run goes on, exit 130
    return run_app(auppath, connector=connector, watch=eid, readonly=args.readonly)


def cmd_stop(args: argparse.Namespace) -> int:
    from aup_tui_backends.errors import AupError
    from aup_tui_backends.status import ExperimentStatus, JobStatus

    _, connector = _connector(args)
    if args.job is not None:
        job = connector.get_job(args.job)
        if job is None:
            raise AupError(f"no job {args.job} in this .aup — `aup-tui status` lists the jobs")
        if not JobStatus(job["status"]).is_live:
            raise AupError(f"job {args.job} is not running (it is {job['status']})")
        connector.request_stop(job["eid"], args.job)
        print(f"asked experiment {job['eid']} to stop job {args.job}")
    else:
        exp = _experiment(connector, args.experiment)
        eid = exp["eid"]
        if exp["status"] != ExperimentStatus.RUNNING:
            raise AupError(f"experiment {eid} is not running (it is {exp['status']})")
        connector.request_stop(eid)
        print(f"asked experiment {eid} to stop")
    connector.close()
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from aup_tui_backends.experiment import summarize

    _, connector = _connector(args)
    exp = _experiment(connector, args.eid)
    eid = exp["eid"]
    jobs = connector.job_rows(eid)  # the shown columns only (e<eid>/summary.json when current)
    result = summarize(connector, eid)
    if args.json:
        out = {
            "eid": eid,
            "name": exp["name"],
            "status": exp["status"],
            "n_samples": exp.get("n_samples"),
            "jobs": [
                {
                    "jid": j["jid"],
                    "status": j["status"],
                    "score": j["score"],
                    "config": j["config"],
                    "resource": j["resource"],
                }
                for j in jobs
            ],
            "best": {"jid": result.best_jid, "score": result.best_score},
            "reason": result.reason,
        }
        try:  # the walk below costs more than the rest of the command at 10,000 jobs: only when needed
            text = json.dumps(out, allow_nan=False)
        except ValueError:
            from aup_tui_backends.jobs import (
                json_safe,
            )  # old records may hold inf/nan: strict JSON all the same

            text = json.dumps(json_safe(out), allow_nan=False)
        print(text)
    else:
        counts = ", ".join(f"{n} {s.lower()}" for s, n in sorted(result.counts.items())) or "no jobs yet"
        print(f"experiment {eid} '{exp['name']}': {exp['status']} — {counts} of {exp.get('n_samples')}")
        if result.reason:
            print(f"why: {result.reason}")
        if result.best_jid is not None:
            print(f"best: job {result.best_jid} score {result.best_score:g} {json.dumps(result.best_config)}")
        print(f"logs: {result.logs}")
    connector.close()
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from aup_tui_backends.export import default_filename, export_format, export_table, render, write_export

    _, connector = _connector(args)
    try:
        exp = _experiment(connector, args.eid)
        fmt = export_format(args.format, args.output)
        if args.output == "-":
            sys.stdout.write(render(export_table(connector, exp["eid"]), fmt))
            return EXIT_OK
        path = args.output or default_filename(exp["eid"], exp["name"], fmt)
        count = write_export(connector, exp["eid"], path, fmt)
        print(f"exported {count} job{'' if count == 1 else 's'} of experiment {exp['eid']} to {path}")
    finally:
        connector.close()
    return EXIT_OK


def cmd_resources(args: argparse.Namespace) -> int:
    auppath, connector = _connector(args)
    if args.free:
        freed = connector.recover()["resources"]
        print(
            f"freed {len(freed)} resource(s) left taken by dead processes" + (f": {freed}" if freed else "")
        )
    from aup_tui_backends.store.process import ProcessId, is_alive

    for r in connector.resources():
        owner = ""
        if r.get("owner"):
            owner = f" by pid {r['owner'][0]}"
            if not is_alive(ProcessId(*r["owner"])):
                owner += " (stuck: that process is gone — `aup-tui resources --free`)"
        job = f" (job {r['jid']})" if r.get("jid") else ""
        print(f"{r['rid']:>4}  {r['type']:<8} {r['name']:<30} {r['status']}{owner}{job}")
    if not connector.resources():
        print(
            "no resources — add some with `aup-tui init --overwrite --cpu 2` (or --gpu/--node/--aws/--passive)"
        )
    if args.probe:
        from aup_tui_backends.monitors.report import probe_resources

        for line in probe_resources(auppath, timeout=args.timeout, accept_new_hosts=args.accept_new_hosts):
            print(line)
    connector.close()
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
