"""Early stopping: which jobs a person sees stopped, and when."""

import json
import subprocess
import sys
import threading

import pytest
from aup_tui_backends.config import load_experiment
from aup_tui_backends.early_stop import make_policy
from aup_tui_backends.errors import ConfigError
from aup_tui_backends.experiment import Experiment
from helpers import ROOT, write_experiment, write_script


def policy(name, steps=1, warmup=0, maximize=True, **extra):
    return make_policy({"aup_policy": name, "aup_policy_steps": steps, "warmup": warmup, **extra}, maximize)


def run(p, curves):
    """Feed the jobs' results step by step, interleaved; return {jid: step it was stopped at}."""
    stopped = {}
    for step in range(max(len(c) for c in curves.values())):
        for jid, curve in curves.items():
            if jid not in stopped and step < len(curve) and p.report(jid, curve[step]):
                stopped[jid] = step + 1
    return stopped


def finished_jobs(p, values):
    """Jobs 1..n that reported one result each and ended."""
    for jid, value in enumerate(values, start=1):
        p.report(jid, value)
        p.forget(jid)


def test_no_early_stop_configured_means_no_policy():
    assert make_policy(None, True) is None
    assert make_policy({}, True) is None


@pytest.mark.parametrize("name", ["median", "bandit", "truncation"])
def test_each_policy_stops_a_clearly_bad_job_and_keeps_good_ones(name):
    good = [0.5, 0.6, 0.7, 0.8, 0.85, 0.9]
    curves = {1: good, 2: list(good), 3: [v + 0.05 for v in good], 4: [0.05, 0.06, 0.07, 0.08, 0.09, 0.1]}
    assert list(run(policy(name), curves)) == [4]


@pytest.mark.parametrize("name", ["median", "bandit", "truncation"])
def test_target_min_stops_the_job_with_high_loss(name):
    good = [2.0, 1.5, 1.0, 0.8, 0.6]
    curves = {1: good, 2: list(good), 3: [v * 0.9 for v in good], 4: [20.0, 19.0, 18.0, 17.0, 16.0]}
    assert list(run(policy(name, maximize=False), curves)) == [4]
    # the same numbers read as scores to maximise: the job with the highest values survives
    assert 4 not in run(policy(name, maximize=True), curves)


def test_median_stops_whatever_falls_below_the_median_of_the_others():
    p = policy("median")
    finished_jobs(p, [0.9, 0.8, 0.7])
    assert p.report(10, 0.8) is False  # at the median: kept
    assert p.report(11, 0.79) is True


def test_each_rule_says_why_in_numbers_a_person_can_check():
    median = policy("median")
    finished_jobs(median, [0.9, 0.8, 0.7])
    assert median.report(11, 0.79) is True
    assert (
        median.reason(11)
        == "median rule: its mean 0.79 over 1 result is lower than the median 0.8 of 3 other jobs"
    )
    assert median.reason(1) == ""  # not stopped
    lone = policy("median")
    finished_jobs(lone, [0.9])
    assert lone.report(2, 0.1) is True
    assert lone.reason(2).endswith("than the median 0.9 of 1 other job")

    bandit = policy("bandit", maximize=False)
    finished_jobs(bandit, [1.0])
    assert bandit.report(2, 1.6) is True
    assert bandit.reason(2) == (
        "bandit rule: its best 1.6 in 1 result is higher than 1.5 (the leader's 1 with bandit_factor 0.5)"
    )

    truncation = policy("truncation")
    finished_jobs(truncation, [0.1 * i for i in range(1, 10)])
    assert truncation.report(101, 0.05) is True
    assert truncation.reason(101) == (
        "truncation rule: its best 0.05 in 1 result ranks 1 from the bottom of 10 jobs, inside the worst 30%"
    )


def test_no_decision_before_warmup():
    curves = {1: [0.9] * 6, 2: [0.1] * 6}
    assert run(policy("median", warmup=4), curves) == {2: 4}


def test_decisions_only_every_aup_policy_steps():
    curves = {1: [0.9] * 7, 2: [0.1] * 7}
    assert run(policy("median", steps=3), curves) == {2: 3}


def test_warmup_and_steps_together_use_the_last_multiple_reached():
    # warmup 5 and steps 2: first decision at result 5, judging the first 4 results
    curves = {1: [0.9] * 8, 2: [0.9, 0.9, 0.9, 0.9, 0.1, 0.1, 0.1, 0.1]}
    assert run(policy("median", steps=2, warmup=5), curves) == {2: 6}


def test_a_job_is_compared_only_on_the_steps_others_have_reached():
    p = policy("median")
    assert p.report(1, 0.1) is False  # nobody to compare with yet
    assert p.report(2, 0.9) is False
    # job 1's first step is judged once job 2 got there; it learns on its next report
    assert p.report(1, 0.1) is True
    assert p.report(1, 0.99) is True  # stays stopped


def test_finished_jobs_still_count_as_comparison():
    p = policy("bandit")
    for value in [0.9, 0.95, 0.97]:
        p.report(1, value)
    p.forget(1)
    stopped = [p.report(2, v) for v in [0.1, 0.2, 0.3]]
    assert stopped == [True, True, True]


def test_stopped_jobs_still_count_for_the_steps_they_reached():
    p = policy("median")
    assert run(p, {1: [0.9, 0.9], 2: [0.1, 0.1]}) == {2: 1}
    # a newcomer is judged against both earlier jobs' first results: median 0.5, so 0.6 stays
    assert p.report(3, 0.6) is False


def test_bandit_factor_sets_the_slack():
    curves = {1: [1.0, 1.0], 2: [0.7, 0.7]}
    assert run(policy("bandit", bandit_factor=0.5), curves) == {}
    assert run(policy("bandit", bandit_factor=0.8), curves) == {2: 1}


def test_truncation_percentage_sets_the_share_stopped():
    finished = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    half, default = policy("truncation", truncation_percentage=0.5), policy("truncation")
    finished_jobs(half, finished)
    finished_jobs(default, finished)
    # 0.35 ranks 4th from the bottom of 10: inside the worst 50%, outside the worst 30%
    assert half.report(100, 0.35) is True
    assert default.report(100, 0.35) is False
    assert default.report(101, 0.25) is True
    assert half.report(102, 0.65) is False


def test_truncation_does_not_stop_ties():
    assert run(policy("truncation", truncation_percentage=0.5), {1: [0.5] * 3, 2: [0.5] * 3}) == {}


def test_reports_from_many_threads_are_safe():
    p = policy("median", steps=5)
    n_jobs, n_steps = 8, 30
    barrier = threading.Barrier(n_jobs)
    results = {}

    def job(jid):
        value = 0.1 if jid == 0 else 0.9
        verdicts = []
        for _ in range(n_steps):
            barrier.wait()
            verdicts.append(p.report(jid, value))
        results[jid] = any(verdicts)

    threads = [threading.Thread(target=job, args=(jid,)) for jid in range(n_jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {0: True, **{jid: False for jid in range(1, n_jobs)}}


@pytest.mark.parametrize(
    "cfg, fragment",
    [
        ({"aup_policy": "magic", "aup_policy_steps": 1}, 'unknown aup_policy "magic"'),
        ({"aup_policy": "curve_fitting", "aup_policy_steps": 1}, "needs curve_fitting_max_iters"),
        (
            {"aup_policy": "curve_fitting", "aup_policy_steps": 1, "curve_fitting_max_iters": 0},
            "curve_fitting_max_iters in",
        ),
        (
            {
                "aup_policy": "curve_fitting",
                "aup_policy_steps": 1,
                "curve_fitting_max_iters": 9,
                "curve_fitting_threshold": 2,
            },
            "curve_fitting_threshold in",
        ),
        (
            {
                "aup_policy": "curve_fitting",
                "aup_policy_steps": 1,
                "curve_fitting_max_iters": 9,
                "curve_fitting_timeout": 0,
            },
            "curve_fitting_timeout in",
        ),
        ({"aup_policy": "median"}, "needs aup_policy_steps"),
        ({"aup_policy": "median", "aup_policy_steps": 0}, "aup_policy_steps in"),
        ({"aup_policy": "median", "aup_policy_steps": 1, "warmup": -1}, "warmup in"),
        (
            {"aup_policy": "truncation", "aup_policy_steps": 1, "truncation_percentage": 30},
            "truncation_percentage in",
        ),
        ({"aup_policy": "bandit", "aup_policy_steps": 1, "bandit_factor": 1.5}, "bandit_factor in"),
    ],
)
def test_bad_early_stop_settings_are_explained(cfg, fragment):
    with pytest.raises(ConfigError) as info:
        make_policy(cfg, True)
    assert fragment in str(info.value)
    assert "resource_args.early_stop in experiment.json" in str(info.value)


# -- curve fitting: learning-curve extrapolation -----------------------------------------------


def rising(top, drop=0.6, n=20):
    """A learning curve climbing towards `top`: top - drop/x for results 1..n."""
    return [top - drop / x for x in range(1, n + 1)]


def curve_policy(maximize=True, **extra):
    return make_policy(
        {"aup_policy": "curve_fitting", "aup_policy_steps": 1, "curve_fitting_max_iters": 20, **extra},
        maximize,
    )


def first_stop(p, jid, values, attempt=1):
    """The result number at which job `jid` is stopped, or None. Fits run in the background and
    their verdict applies at the next report: here each is waited for before that report."""
    for i, value in enumerate(values, start=1):
        if p.report(jid, value, attempt):
            return i
        p.wait_for_fits(60)
    return None


def test_curve_fitting_stops_a_job_whose_curve_heads_below_the_best_and_keeps_a_better_one():
    p = curve_policy()
    assert first_stop(p, 1, rising(0.9)) is None  # nobody to compare with: runs to the end
    p.forget(1)
    # 0.5 - 0.4/x looks fine early on (its 5th result 0.42 is not far from 0.78), but levels off:
    # judged on its 5 results, stopped at its next report
    assert first_stop(p, 2, rising(0.5, drop=0.4)) == 6
    assert p.reason(2) == (
        "curve fitting: its 5 results extrapolate to 0.48 at result 20, lower than "
        "0.8265 (0.95 × the best finished result 0.87)"
    )
    assert first_stop(p, 3, rising(0.95)) is None
    assert first_stop(p, 4, rising(0.88)) is None  # below the best but within the threshold: 0.85 ≥ 0.8265


def test_curve_fitting_with_target_min_stops_a_loss_that_levels_off_high():
    p = curve_policy(maximize=False)
    assert first_stop(p, 1, [1 - v for v in rising(0.9)]) is None
    p.forget(1)
    assert first_stop(p, 2, [1 - v for v in rising(0.5, drop=0.4)]) == 6
    assert "higher than 0.1365 (1.05 × the best finished result 0.13)" in p.reason(2)
    assert first_stop(p, 3, [1 - v for v in rising(0.95)]) is None


def test_curve_fitting_judges_from_the_5th_result_after_warmup_and_every_steps():
    p = curve_policy(aup_policy_steps=3, warmup=7)
    first_stop(p, 1, rising(0.9))
    p.forget(1)
    assert first_stop(p, 2, rising(0.5, drop=0.4)) == 8  # first multiple of 3 judged: 6 of 7 results
    assert "its 6 results" in p.reason(2)
    lone = curve_policy()
    assert first_stop(lone, 5, rising(0.1)) is None  # no job has ended: nothing to compare with


def test_curve_fitting_gives_up_at_its_timeout_instead_of_stalling():
    p = curve_policy(curve_fitting_timeout=1e-9)
    first_stop(p, 1, rising(0.9))
    p.forget(1)
    # no family fits within the time allowed, so no verdict: the job runs on
    assert first_stop(p, 2, rising(0.5, drop=0.4)) is None


def test_curve_fitting_needs_a_good_fit_from_four_families():
    p = curve_policy()
    first_stop(p, 1, rising(0.9))
    p.forget(1)
    noise = [0.1, 0.9, -0.7, 0.8, -0.9, 0.6, -0.8, 0.7, -0.6, 0.9]  # no curve family fits this
    assert first_stop(p, 2, noise) is None


def test_curve_fitting_without_scipy_names_the_extra_to_install(tmp_path):
    blocker = (
        "import sys\n"
        "sys.modules['scipy'] = None  # as if it were not installed\n"
        "from aup_tui_backends.early_stop import make_policy\n"
        "from aup_tui_backends.errors import ConfigError\n"
        "try:\n"
        "    make_policy({'aup_policy': 'curve_fitting', 'aup_policy_steps': 1,"
        " 'curve_fitting_max_iters': 5}, True)\n"
        "except ConfigError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", blocker], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert out.stdout.strip() == (
        'aup_policy "curve_fitting" in resource_args.early_stop in experiment.json '
        "needs scipy, which is not installed — pip install 'aup-tui[curve-fitting]'"
    )


def test_curve_fitting_stops_a_real_job_in_an_experiment(workdir):
    """Two real jobs one after the other: the first climbs to 0.9 and finishes; the second,
    levelling off at 0.5, is stopped early with the rule's numbers on its record."""
    # the weak job reports on (at most ~100 s) until it is stopped: the verdict of the fit on
    # its first 5 results, made in the background, applies at one of its later reports
    write_script(
        workdir,
        "curve.sh",
        """
        top=$(sed 's/.*"top": *\\([-0-9.e]*\\).*/\\1/' "$1")
        n=20; [ "$top" = "0.5" ] && n=2000
        i=1
        while [ $i -le $n ]; do
            awk -v t="$top" -v i=$i 'BEGIN { printf "#Auptimizer:%.6f\\n", t - 0.5 * t / (i < 20 ? i : 20) }'
            [ $i -ge 20 ] && sleep 0.05
            i=$((i + 1))
        done
    """,
    )
    path = write_experiment(
        workdir,
        script="./curve.sh",
        proposer="sequence",
        n_parallel=1,
        n_samples=0,
        parameter_config=[{"name": "top", "type": "choice", "range": [0.9, 0.5]}],
        resource_args={
            "early_stop": {
                "aup_policy": "curve_fitting",
                "aup_policy_steps": 1,
                "curve_fitting_max_iters": 20,
            }
        },
    )
    exp = Experiment(load_experiment(path), auppath=str(workdir / ".aup"))
    result = exp.run()
    assert result.status == "FINISHED"
    jobs = {j["config"]["top"]: j for j in exp.connector.jobs(result.eid)}
    assert jobs[0.9]["status"] == "FINISHED"
    assert jobs[0.5]["status"] == "EARLY_STOPPED"
    assert "curve fitting: its 5 results extrapolate to" in json.dumps(jobs[0.5])


# -- a retried job starts a new curve; fits never hold up a job's output ----------------------------


def test_a_retried_jobs_curve_starts_again_with_its_new_attempt(workdir):
    """Job 2's first attempt reports three weak results and fails; its retry reports strong ones.
    Judged on the retry's own results it is not stopped (the failed attempt's do not count)."""
    write_script(
        workdir,
        "retry.sh",
        f"""
        top=$(sed 's/.*"top": *\\([-0-9.e]*\\).*/\\1/' "$1")
        if [ "$top" = "0.95" ] && [ ! -e "{workdir}/tried" ]; then
            touch "{workdir}/tried"
            echo "#Auptimizer:0.1"; echo "#Auptimizer:0.1"; echo "#Auptimizer:0.1"
            exit 1
        fi
        for i in 1 2 3 4; do echo "#Auptimizer:$top"; done
    """,
    )
    path = write_experiment(
        workdir,
        script="./retry.sh",
        proposer="sequence",
        n_parallel=1,
        n_samples=0,
        parameter_config=[{"name": "top", "type": "choice", "range": [0.9, 0.95]}],
        job_failure={"job_retries": 1},
        resource_args={"early_stop": {"aup_policy": "median", "aup_policy_steps": 4}},
    )
    exp = Experiment(load_experiment(path), auppath=str(workdir / ".aup"))
    result = exp.run()
    assert result.status == "FINISHED"
    jobs = {j["config"]["top"]: j for j in exp.connector.jobs(result.eid)}
    assert jobs[0.95]["status"] == "FINISHED", jobs[0.95]
    assert [a["attempt"] for a in jobs[0.95]["attempts"]] == [1, 2]


def test_policy_forgets_an_earlier_attempts_results():
    for name in ("median", "bandit", "truncation"):
        p = policy(name, steps=4)
        run(p, {1: [0.9] * 4})
        p.forget(1)
        for value in (0.1, 0.1, 0.1):  # attempt 1, then it failed and is retried
            assert not p.report(2, value, 1)
        assert not any(p.report(2, 0.95, 2) for _ in range(4)), name
    p = curve_policy()
    first_stop(p, 1, rising(0.9))
    p.forget(1)
    first_stop(p, 2, [0.01] * 4, attempt=1)
    assert first_stop(p, 2, [0.95] * 6, attempt=2) is None  # attempt 1's results are not on its curve


def test_a_slow_curve_fit_does_not_stop_the_jobs_output_being_read(workdir, monkeypatch):
    """While the fit of job 2's curve takes its time, job 2 writes far more than a pipe holds:
    its output is still read (the job is not blocked), and the verdict stops it afterwards."""
    import aup_tui_backends.early_stop as early_stop

    gate = threading.Event()
    fitting = threading.Event()

    def slow_fit(values, at, timeout, max_evals=2000):
        fitting.set()
        gate.wait(60)
        return 0.0  # far below the finished job's 0.9: stop

    monkeypatch.setattr(early_stop, "predict_final", slow_fit)
    write_script(
        workdir,
        "chatty.sh",
        f"""
        top=$(sed 's/.*"top": *\\([-0-9.e]*\\).*/\\1/' "$1")
        for i in 1 2 3 4 5; do echo "#Auptimizer:$top"; done
        [ "$top" = "0.9" ] && exit 0
        head -c 2000000 /dev/zero | tr '\\0' 'x' | fold -w 1000
        touch "{workdir}/wrote_all"
        i=0
        while [ $i -lt 2000 ]; do echo "#Auptimizer:$top"; sleep 0.05; i=$((i+1)); done
    """,
    )
    path = write_experiment(
        workdir,
        script="./chatty.sh",
        proposer="sequence",
        n_parallel=1,
        n_samples=0,
        parameter_config=[{"name": "top", "type": "choice", "range": [0.9, 0.5]}],
        resource_args={
            "early_stop": {
                "aup_policy": "curve_fitting",
                "aup_policy_steps": 5,
                "curve_fitting_max_iters": 20,
            }
        },
    )
    exp = Experiment(load_experiment(path), auppath=str(workdir / ".aup"))
    out = []
    thread = threading.Thread(target=lambda: out.append(exp.run()), daemon=True)
    thread.start()
    wrote = workdir / "wrote_all"
    try:
        assert fitting.wait(60), "job 2 was never judged"
        for _ in range(3000):  # bounded: 30 s for 2 MB
            if wrote.exists():
                break
            threading.Event().wait(0.01)
        assert wrote.exists(), "the job blocked writing its output while its curve was being fitted"
    finally:
        gate.set()
        thread.join(60)
    assert not thread.is_alive()
    jobs = {j["config"]["top"]: j for j in exp.connector.jobs(out[0].eid)}
    assert jobs[0.5]["status"] == "EARLY_STOPPED"
