"""Early stopping of jobs whose intermediate results lag behind, as in Auptimizer 2.0.

A job reports one result per step (each ``#Auptimizer:`` line). At an evaluation step — a multiple
of ``aup_policy_steps`` once ``warmup`` results are in — the job is compared with the other jobs'
results over the same first steps, and a job that looks hopeless is stopped so its resource can run
a better candidate. Configured by ``resource_args.early_stop`` in experiment.json::

    {"aup_policy": "median", "aup_policy_steps": 5, "warmup": 10}

Auptimizer's defaults are kept: ``warmup`` 0, ``bandit_factor`` 0.5, ``truncation_percentage``
0.3 (a fraction, despite the name), ``curve_fitting_threshold`` 0.95, ``curve_fitting_timeout``
60 (seconds); ``curve_fitting_max_iters`` (how many results a job reports in all) is required.
Unlike Auptimizer, a job stopped early keeps counting as comparison for the steps it reached, so
the bar does not rise just because weak jobs were removed.
"""

from __future__ import annotations

import logging
import math
import queue
import statistics
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any, ClassVar

from .errors import ConfigError
from .optional import installed
from .values import is_number, value_text

log = logging.getLogger(__name__)

POLICY_NAMES = ("median", "bandit", "truncation", "curve_fitting")
CURVE_FITTING_MIN_RESULTS = 5  # as Auptimizer: a curve is extrapolated from its 5th result on
CURVE_FITTING_MIN_FAMILIES = 4  # …and only when at least 4 curve families fit it

#: what the curve-fitting worker is handed: (the verdict to fill, the job's first results, the
#: step they reach, the best finished job's result)
_FitRequest = tuple[Future[str | None], list[float], int, float]


class _Curve:
    """One job's results as running sums and running bests, so any prefix is judged in O(1)."""

    __slots__ = ("sums", "bests")

    def __init__(self) -> None:
        self.sums: list[float] = []
        self.bests: list[float] = []

    def __len__(self) -> int:
        return len(self.sums)

    def add(self, value: float, better: Callable[[float, float], bool]) -> None:
        self.sums.append(value + (self.sums[-1] if self.sums else 0.0))
        keep_old = self.bests and not better(value, self.bests[-1])
        self.bests.append(self.bests[-1] if keep_old else value)

    def mean(self, step: int) -> float:
        return self.sums[step - 1] / step

    def best(self, step: int) -> float:
        return self.bests[step - 1]


class EarlyStopPolicy:
    """Judges running jobs from their intermediate results; safe to call from many job threads.

    A job is judged once per evaluation step, as soon as at least one other job has reached that
    step too; until then the decision waits, so the fastest job is judged when another catches up
    and learns the verdict from its next :meth:`report`.
    """

    name: ClassVar[str]

    def __init__(self, steps: int, warmup: int, maximize: bool) -> None:
        self.steps = steps
        self.warmup = warmup
        self.maximize = maximize
        self._curves: dict[int, _Curve] = {}
        self._judged_at: dict[int, int] = {}
        self._stopped: dict[int, str] = {}  # jid → why
        self._ended: set[int] = set()
        self._attempts: dict[int, int] = {}  # jid → the attempt its curve belongs to
        self._lock = threading.Lock()

    def report(self, jid: int, value: float, attempt: int = 1) -> bool:
        """Record ``value`` as the next result of job ``jid``'s attempt ``attempt``; True when the
        job should be stopped. A new attempt (a retry) starts a new curve."""
        with self._lock:
            self._new_attempt(jid, attempt)
            if jid not in self._stopped:
                self._curves.setdefault(jid, _Curve()).add(float(value), self._better)
                self._judge_waiting()
            return jid in self._stopped

    def reason(self, jid: int) -> str:
        """Why job ``jid`` was stopped, in words a person can check against the numbers."""
        with self._lock:
            return self._stopped.get(jid, "")

    def _new_attempt(self, jid: int, attempt: int) -> None:
        """A retried job's earlier attempt is not part of its curve (caller holds the lock)."""
        if self._attempts.setdefault(jid, attempt) != attempt:
            self._attempts[jid] = attempt
            self._reset(jid)

    def _reset(self, jid: int) -> None:
        self._curves.pop(jid, None)
        self._judged_at.pop(jid, None)
        self._stopped.pop(jid, None)
        self._ended.discard(jid)

    def forget(self, jid: int) -> None:
        """Mark the job ended: it is judged no more, but its results still count for the others,
        as Auptimizer compares running jobs with finished ones too."""
        with self._lock:
            self._ended.add(jid)

    def _judge_waiting(self) -> None:
        for jid, curve in self._curves.items():
            if jid in self._stopped or jid in self._ended:
                continue
            step = self._evaluation_step(len(curve))
            if step is None or self._judged_at.get(jid) == step:
                continue
            others = [c for j, c in self._curves.items() if j != jid and len(c) >= step]
            if not others:
                continue
            self._judged_at[jid] = step
            why = self._lags(curve, others, step)
            if why:
                self._stopped[jid] = why

    def _evaluation_step(self, n_results: int) -> int | None:
        if n_results < self.warmup or n_results < self.steps:
            return None
        return n_results - n_results % self.steps

    def _better(self, a: float, b: float) -> bool:
        return a > b if self.maximize else a < b

    def _best(self, values: Iterable[float]) -> float:
        return max(values) if self.maximize else min(values)

    def _lags(self, curve: _Curve, others: list[_Curve], step: int) -> str | None:
        """Why the job lags the others over its first ``step`` results, or None when it does not."""
        raise NotImplementedError

    def _worse(self) -> str:
        return "lower" if self.maximize else "higher"


class MedianPolicy(EarlyStopPolicy):
    """Stop a job whose mean result so far is worse than the median of the others' means."""

    name = "median"

    def _lags(self, curve: _Curve, others: list[_Curve], step: int) -> str | None:
        median = statistics.median(other.mean(step) for other in others)
        if not self._better(median, curve.mean(step)):
            return None
        return (
            f"median rule: its mean {curve.mean(step):.4g} over {_results(step)} is {self._worse()} "
            f"than the median {median:.4g} of {_plural(len(others), 'other job')}"
        )


class BanditPolicy(EarlyStopPolicy):
    """Stop a job whose best result is worse than the leader's by more than a slack.

    The slack is ``(1 - bandit_factor) * |leader|``: with the default 0.5 a job maximising accuracy
    is stopped when its best is under half the leader's best.
    """

    name = "bandit"

    def __init__(self, steps: int, warmup: int, maximize: bool, factor: float) -> None:
        super().__init__(steps, warmup, maximize)
        self.factor = factor

    def _lags(self, curve: _Curve, others: list[_Curve], step: int) -> str | None:
        leader = self._best(other.best(step) for other in others)
        slack = (1 - self.factor) * abs(leader)
        threshold = leader - slack if self.maximize else leader + slack
        if not self._better(threshold, curve.best(step)):
            return None
        return (
            f"bandit rule: its best {curve.best(step):.4g} in {_results(step)} is {self._worse()} than "
            f"{threshold:.4g} (the leader's {leader:.4g} with bandit_factor {self.factor:g})"
        )


class TruncationPolicy(EarlyStopPolicy):
    """Stop a job whose best result ranks in the bottom ``truncation_percentage`` of all jobs."""

    name = "truncation"

    def __init__(self, steps: int, warmup: int, maximize: bool, fraction: float) -> None:
        super().__init__(steps, warmup, maximize)
        self.fraction = fraction

    def _lags(self, curve: _Curve, others: list[_Curve], step: int) -> str | None:
        mine = curve.best(step)
        # rank 1 is the worst; ties rank this job above the others, as Auptimizer's stable sort does
        rank = 1 + sum(1 for other in others if not self._better(other.best(step), mine))
        if rank / (len(others) + 1) > self.fraction:
            return None
        return (
            f"truncation rule: its best {mine:.4g} in {_results(step)} ranks {rank} from the bottom "
            f"of {len(others) + 1} jobs, inside the worst {self.fraction:.0%}"
        )


class CurveFittingPolicy(EarlyStopPolicy):
    """Learning-curve extrapolation, as Auptimizer's ``curve_fitting``: fit several curve families
    to a job's results so far, predict its result at ``curve_fitting_max_iters``, and stop it when
    the prediction falls short of ``curve_fitting_threshold`` × the best result of the jobs that
    ended (for a negative best, 2 − threshold; for ``target: min`` the same on negated values).

    A job is judged at its evaluation steps from its 5th result on, once some job has ended. The
    fit runs in one background worker (never in the job's output pump, which must keep reading a
    chatty job's pipe) and gives up at ``curve_fitting_timeout`` seconds, with each family's
    least-squares fit capped in evaluations; its verdict is applied at the job's next report.
    One fit per job at a time.
    """

    name = "curve_fitting"

    def __init__(
        self, steps: int, warmup: int, maximize: bool, threshold: float, max_iters: int, timeout: float
    ) -> None:
        super().__init__(steps, warmup, maximize)
        self.threshold = threshold
        self.max_iters = max_iters
        self.timeout = timeout
        self._values: dict[int, list[float]] = {}
        self._fits: dict[int, Future[str | None]] = {}  # jid → the fit of its current attempt under way
        self._queue: queue.SimpleQueue[_FitRequest] | None = None  # fits for the worker thread

    def report(self, jid: int, value: float, attempt: int = 1) -> bool:
        with self._lock:
            self._new_attempt(jid, attempt)
            self._apply_fit(jid)
            if jid in self._stopped:
                return True
            self._curves.setdefault(jid, _Curve()).add(float(value), self._better)
            values = self._values.setdefault(jid, [])
            values.append(float(value))
            if jid in self._fits:  # judged when the fit under way has said
                return False
            step = self._evaluation_step(len(values))
            if step is None or step < CURVE_FITTING_MIN_RESULTS or self._judged_at.get(jid) == step:
                return False
            ended = [
                self._curves[j]
                for j in self._ended
                if j not in self._stopped and len(self._curves.get(j, ()))
            ]
            if not ended:
                return False
            self._judged_at[jid] = step
            best = self._best(c.best(len(c)) for c in ended)
            self._fits[jid] = fit = Future[str | None]()
            if self._queue is None:
                self._queue = queue.SimpleQueue()
                # a daemon: a fit under way never holds up the process's exit
                threading.Thread(
                    target=self._fit_worker, args=(self._queue,), name="aup-curve-fit", daemon=True
                ).start()
            self._queue.put((fit, list(values[:step]), step, best))
            return False

    def _fit_worker(self, fits: queue.SimpleQueue[_FitRequest]) -> None:
        while True:
            fit, curve, step, best = fits.get()
            if not fit.set_running_or_notify_cancel():
                continue
            try:
                fit.set_result(self._verdict(curve, step, best))
            except BaseException as exc:  # noqa: BLE001 — handed to `_apply_fit`
                fit.set_exception(exc)

    def forget(self, jid: int) -> None:
        super().forget(jid)
        with self._lock:
            fit = self._fits.pop(jid, None)
        if fit is not None:
            fit.cancel()

    def wait_for_fits(self, timeout: float | None = None) -> None:
        """Wait until the fits under way are done (their verdicts apply at the jobs' next report)."""
        with self._lock:
            fits = list(self._fits.values())
        for fit in fits:
            try:
                fit.result(timeout)
            except Exception:  # noqa: BLE001 — `_apply_fit` reports it
                pass

    def _apply_fit(self, jid: int) -> None:
        """Take the verdict of job ``jid``'s finished fit (caller holds the lock)."""
        fit = self._fits.get(jid)
        if fit is None or not fit.done():
            return
        del self._fits[jid]
        try:
            why = fit.result()
        except Exception:  # a fit that breaks judges nothing: the job runs on
            log.exception("curve fitting for job %s failed", jid)
            return
        if why:
            self._stopped[jid] = why

    def _reset(self, jid: int) -> None:
        super()._reset(jid)
        self._values.pop(jid, None)
        fit = self._fits.pop(jid, None)  # the earlier attempt's verdict is dropped
        if fit is not None:
            fit.cancel()

    def _verdict(self, curve: list[float], step: int, best: float) -> str | None:
        """Why a job with these first ``step`` results should stop (in the worker), or None."""
        sign = 1.0 if self.maximize else -1.0
        predicted = predict_final([sign * v for v in curve], self.max_iters, self.timeout)
        if predicted is None:
            return None
        factor = self.threshold if sign * best > 0 else 2 - self.threshold
        if predicted >= factor * sign * best:
            return None
        return (
            f"curve fitting: its {_results(step)} extrapolate to {sign * predicted:.4g} at result "
            f"{self.max_iters}, {self._worse()} than {factor * best:.4g} "
            f"({factor:g} × the best finished result {best:.4g})"
        )


# Learning-curve families (Domhan et al. 2015, as Auptimizer lists them): x is the result's
# number from 1, each rises towards an asymptote for suitable parameters.
def _curve_families() -> dict[str, tuple[Callable[..., Any], int]]:
    import numpy as np

    return {
        "vap": (lambda x, a, b, c: np.exp(a + b / x + c * np.log(x)), 3),
        "pow3": (lambda x, c, a, alpha: c - a * x ** (-alpha), 3),
        "linear": (lambda x, a, b: a * x + b, 2),
        "logx_linear": (lambda x, a, b: a * np.log(x) + b, 2),
        "dr_hill_zero_background": (lambda x, theta, eta, kappa: theta * x**eta / (kappa**eta + x**eta), 3),
        "log_power": (lambda x, a, b, c: a / (1.0 + (x / np.exp(b)) ** c), 3),
        "pow4": (lambda x, alpha, a, b, c: c - (a * x + b) ** (-alpha), 4),
        "mmf": (
            lambda x, alpha, beta, kappa, delta: alpha - (alpha - beta) / (1.0 + (kappa * x) ** delta),
            4,
        ),
        "exp4": (lambda x, c, a, b, alpha: c - np.exp(-a * x**alpha + b), 4),
        "ilog2": (lambda x, c, a: c - a / np.log(x + 1.0), 2),
        "weibull": (
            lambda x, alpha, beta, kappa, delta: alpha - (alpha - beta) * np.exp(-((kappa * x) ** delta)),
            4,
        ),
        "janoschek": (lambda x, a, beta, k, delta: a - (a - beta) * np.exp(-k * x**delta), 4),
    }


def predict_final(values: list[float], at: int, timeout: float, max_evals: int = 2000) -> float | None:
    """The value a rising learning curve reaches at result ``at``, extrapolated from ``values``
    (results 1…n); None when fewer than 4 curve families fit it well, as Auptimizer.

    Each family is fitted by least squares (scipy's ``curve_fit``, at most ``max_evals``
    evaluations); a family counts when its squared error is under n·mean² (Auptimizer's filter)
    and its prediction is finite. The prediction is the median of the families' predictions
    (Auptimizer averages MCMC samples of weighted combinations that barely move from equal
    weights; the median is as close, robust to one wild family, and takes milliseconds).
    Fitting stops at ``timeout`` seconds with the families fitted so far.
    """
    import warnings

    import numpy as np
    from scipy.optimize import OptimizeWarning, curve_fit

    deadline = time.monotonic() + timeout
    x = np.arange(1, len(values) + 1, dtype=float)
    y = np.asarray(values, dtype=float)
    standard = len(y) * float(np.mean(y)) ** 2
    predictions = []
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", OptimizeWarning)
        for func, n_params in _curve_families().values():
            if time.monotonic() >= deadline:
                break
            try:
                params, _ = curve_fit(func, x, y, p0=np.ones(n_params), maxfev=max_evals)
            except (
                RuntimeError,
                ValueError,
                TypeError,
                FloatingPointError,
                OverflowError,
                ZeroDivisionError,
            ):
                continue
            fitted = func(x, *params)
            error = float(np.sum((fitted - y) ** 2))
            final = float(func(float(at), *params))
            if math.isfinite(error) and error < standard and math.isfinite(final):
                predictions.append(final)
    if len(predictions) < CURVE_FITTING_MIN_FAMILIES:
        return None
    return float(np.median(predictions))


def make_policy(
    cfg: dict[str, Any] | None, maximize: bool, source: str = "experiment.json"
) -> EarlyStopPolicy | None:
    """Build the policy ``resource_args.early_stop`` asks for; None when early stopping is off."""
    if not cfg:
        return None
    where = f"resource_args.early_stop in {source}"
    if not isinstance(cfg, dict):
        raise ConfigError(
            f'{where} must be an object such as {{"aup_policy": "median", "aup_policy_steps": 5}}'
        )
    policy = cfg.get("aup_policy")
    if policy not in POLICY_NAMES:
        raise ConfigError(
            f"unknown aup_policy {value_text(policy)} in {where} — use median, bandit, truncation or curve_fitting"
        )
    steps = _whole(cfg, "aup_policy_steps", where, minimum=1)
    warmup = _whole(cfg, "warmup", where, minimum=0, default=0)
    if policy == "median":
        return MedianPolicy(steps, warmup, maximize)
    if policy == "bandit":
        factor = _fraction(cfg, "bandit_factor", where, default=0.5, closed=True)
        return BanditPolicy(steps, warmup, maximize, factor)
    if policy == "curve_fitting":
        return _curve_fitting(cfg, where, steps, warmup, maximize)
    fraction = _fraction(cfg, "truncation_percentage", where, default=0.3, closed=False)
    return TruncationPolicy(steps, warmup, maximize, fraction)


def _curve_fitting(
    cfg: dict[str, Any], where: str, steps: int, warmup: int, maximize: bool
) -> CurveFittingPolicy:
    if not installed("scipy"):
        raise ConfigError(
            f'aup_policy "curve_fitting" in {where} needs scipy, which is not installed '
            "— pip install 'aup-tui[curve-fitting]'"
        )
    if cfg.get("curve_fitting_max_iters") is None:
        raise ConfigError(
            f"{where} needs curve_fitting_max_iters for aup_policy curve_fitting "
            "— the number of results a job reports in all"
        )
    max_iters = _whole(cfg, "curve_fitting_max_iters", where, minimum=1)
    threshold = _fraction(cfg, "curve_fitting_threshold", where, default=0.95, closed=True)
    timeout = cfg.get("curve_fitting_timeout", 60)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
        raise ConfigError(
            f"curve_fitting_timeout in {where} must be a number of seconds above 0 "
            f"such as 60, got {value_text(timeout)}"
        )
    return CurveFittingPolicy(steps, warmup, maximize, threshold, max_iters, float(timeout))


def _whole(cfg: dict[str, Any], key: str, where: str, minimum: int, default: int | None = None) -> int:
    value = cfg.get(key, default)
    if value is None:
        raise ConfigError(f"{where} needs {key} — how many results a job reports between checks")
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(
            f"{key} in {where} must be a whole number of at least {minimum}, got {value_text(value)}"
        )
    return value


def _fraction(cfg: dict[str, Any], key: str, where: str, default: float, closed: bool) -> float:
    value = cfg.get(key, default)
    inside = is_number(value) and (0 <= value <= 1 if closed else 0 < value < 1)
    if not inside:
        raise ConfigError(
            f"{key} in {where} must be a fraction between 0 and 1 such as {default}, got {value_text(value)}"
        )
    return float(value)


def _plural(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def _results(n: int) -> str:
    return _plural(n, "result")
