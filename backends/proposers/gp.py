"""Gaussian-process Bayesian optimisation: ``spearmint`` (Auptimizer's name) and ``gp``.

As Spearmint does: parameters are mapped to the unit cube (a choice to one coordinate per value),
a GP with an ARD Matérn-5/2 kernel is fitted to the scores so far, and the next job is the
candidate with the largest expected improvement among a Sobol grid of ``grid_size`` points
(Auptimizer's default 20,000; each step scores a random ``candidates`` of them, default 2,000, to
bound a step's cost). Jobs still running count as scoring the mean so far (the "constant
liar"), so parallel jobs spread out. The first ``n_startup`` jobs (default 2, as Spearmint) are
grid points taken at random.

The GP is scikit-learn's GaussianProcessRegressor (an optional extra, ``aup-tui[gp]``: it is
~50 MB and takes ~1 s to import, so random search never loads it). The kernel's hyperparameters
are tuned (on at most 200 results, warm-started) after each of the first 10 results and then
whenever the results grew by a quarter; in between only the posterior is recomputed. Beyond 400
results the GP sees the best 200 and a random 200 of the rest (expected improvement matters near
the best), so a step costs about the same at 1,000 results as at 400 rather than growing with the
cube of the count (bench_proposers.py: ~50 ms median, ~0.7 s when re-tuning, at 1,000).
Spearmint's ``engine``, ``engine_config`` and ``spearmint_dir`` are accepted for
compatibility; ``spearmint`` adds ``job_id`` (written by the engine into every job's config).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from typing import Any

from ..config import ExperimentConfig
from ..errors import ConfigError
from .base import History, Params, Proposer, config_key, key_int
from .optuna import to_optuna

REFIT_BELOW = 10  # refit the kernel's hyperparameters after every result up to this many
REFIT_GROWTH = 1.25  # …and then whenever the results grew by a quarter
REFIT_MAX = 200  # points the hyperparameters are tuned on
MAX_POINTS = 400  # points the posterior is computed from


class GPProposer(Proposer):
    """GP + expected improvement over a Sobol candidate grid."""

    name = "gp"

    def __init__(self, config: ExperimentConfig) -> None:
        super().__init__(config)
        import numpy as np
        from scipy.stats import qmc

        self._np = np
        self._params = config.parameter_config
        self.grid_size = key_int(config, "grid_size", 20000, minimum=1)
        self.n_candidates = key_int(config, "candidates", 2000, minimum=1)
        self.n_startup = key_int(config, "n_startup", 2, minimum=1)
        self._dim = sum(len(p["range"]) if p["type"] == "choice" else 1 for p in self._params)
        self._rs = np.random.default_rng(self.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Sobol warns when grid_size is no power of two
            sobol = qmc.Sobol(len(self._params), scramble=True, seed=self.seed)
            self._grid = sobol.random(self.grid_size)
        self._X: list[Any] = []  # encoded points with a result
        self._y: list[float] = []  # their losses
        self._pending: dict[str, list[Any]] = {}  # config key → encoded points still running
        self._kernel: Any = None  # the last tuned kernel
        self._fitted_at = 0
        self._queued: list[Params] = []  # an earlier run's jobs to propose again first (`enqueue`)

    # -- encoding ------------------------------------------------------------------------

    def _decode(self, u: Any) -> Params:
        """A grid point in [0, 1)^n (one coordinate a parameter) → the job's values."""
        out: dict[str, Any] = {}
        for p, x in zip(self._params, u):
            if p["type"] == "choice":
                out[p["name"]] = p["range"][min(int(x * len(p["range"])), len(p["range"]) - 1)]
                continue
            low, high = p["range"]
            if p["type"] == "int":
                out[p["name"]] = min(int(low + x * (high - low + 1)), int(high))
            else:
                out[p["name"]] = float(low + x * (high - low))
        return out

    def _encode(self, config: Params) -> Any:
        """The job's values → the GP's inputs (numbers scaled to [0, 1], choices one-hot)."""
        row: list[float] = []
        for p in self._params:
            value = config[p["name"]]
            if p["type"] == "choice":
                row.extend(1.0 if value == choice else 0.0 for choice in p["range"])
            else:
                low, high = p["range"]
                row.append(0.5 if high == low else (float(value) - low) / (high - low))
        return self._np.array(row)

    # -- proposing -----------------------------------------------------------------------

    def _encode_grid(self, U: Any) -> Any:
        """Grid points → the GP's inputs, vectorised (what ``_encode(_decode(u))`` gives)."""
        np = self._np
        cols = []
        for j, p in enumerate(self._params):
            u = U[:, j]
            if p["type"] == "choice":
                k = len(p["range"])
                index = np.minimum((u * k).astype(int), k - 1)
                cols.append(np.eye(k)[index])
                continue
            low, high = p["range"]
            if high == low:
                cols.append(np.full((len(u), 1), 0.5))
            elif p["type"] == "int":
                value = np.minimum(np.floor(low + u * (high - low + 1)), high)
                cols.append(((value - low) / (high - low))[:, None])
            else:
                cols.append(u[:, None])
        return np.hstack(cols)

    def _propose(self) -> Params:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):  # BLAS threads fighting over small matrices cost 5x here
            return self._propose_one()

    def _propose_one(self) -> Params:
        if self._queued:
            params = self._queued.pop(0)
        elif len(self._y) < self.n_startup:
            params = self._decode(self._grid[self._rs.integers(len(self._grid))])
        else:
            idx = self._rs.choice(
                len(self._grid), size=min(self.n_candidates, len(self._grid)), replace=False
            )
            ei = self._expected_improvement(self._encode_grid(self._grid[idx]))
            params = self._decode(self._grid[idx[int(self._np.argmax(ei))]])
        self._pending.setdefault(config_key(params), []).append(self._encode(params))
        return params

    def _expected_improvement(self, cands: Any) -> Any:
        np = self._np
        from scipy.stats import norm

        X = np.array(self._X)
        y = np.array(self._y)
        if len(y) > MAX_POINTS:  # the best half and a random rest: EI matters near the best
            rows = self._subset(y, MAX_POINTS)
            X, y = X[rows], y[rows]
        pending = [x for xs in self._pending.values() for x in xs]
        if pending:  # constant liar: running jobs score the mean so far
            X = np.vstack([X, np.array(pending)])
            y = np.concatenate([y, np.full(len(pending), y.mean())])
        gp = self._fit(X, y)
        mu, sigma = gp.predict(cands, return_std=True)
        best = float(np.min(self._y))
        sigma = np.maximum(sigma, 1e-12)
        z = (best - mu) / sigma
        return (best - mu) * norm.cdf(z) + sigma * norm.pdf(z)

    def _subset(self, y: Any, size: int) -> Any:
        """Rows of the ``size // 2`` best results and a random draw of the others."""
        np = self._np
        order = np.argsort(y)
        rest = self._rs.choice(order[size // 2 :], size - size // 2, replace=False)
        return np.concatenate([order[: size // 2], rest])

    def _fit(self, X: Any, y: Any) -> Any:
        """The GP on (X, y). Kernel hyperparameters are re-optimised now and then, on at most
        REFIT_MAX points (the best half and a random rest), warm-started from the last fit; the
        posterior always uses every point."""
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

        np = self._np
        n = len(self._y)
        if self._kernel is None or n < REFIT_BELOW or n >= self._fitted_at * REFIT_GROWTH:
            kernel = self._kernel or (
                ConstantKernel(1.0, (1e-3, 1e3))
                * Matern(length_scale=[0.5] * X.shape[1], length_scale_bounds=(1e-3, 1e2), nu=2.5)
                + WhiteKernel(1e-4, (1e-8, 1e-1))
            )
            rows = self._subset(y, REFIT_MAX) if len(y) > REFIT_MAX else np.arange(len(y))
            tuner = GaussianProcessRegressor(
                kernel=kernel, normalize_y=True, n_restarts_optimizer=0, random_state=self.seed
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # convergence chatter from the kernel optimiser
                tuner.fit(X[rows], y[rows])
            self._kernel, self._fitted_at = tuner.kernel_, n
        gp = GaussianProcessRegressor(kernel=self._kernel, normalize_y=True, optimizer=None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gp.fit(X, y)
        return gp

    # -- learning ------------------------------------------------------------------------

    def _tell(self, config: Params, score: float | None) -> None:
        key = config_key(config)
        points = self._pending.get(key)
        if points:
            points.pop()
            if not points:
                del self._pending[key]
        if to_optuna(self._params, config) is None:
            return
        loss = self._loss(score) if score is not None else self._failed_loss()
        if loss is not None:
            self._X.append(self._encode(config))
            self._y.append(loss)

    def _failed_loss(self) -> float | None:
        """A failed job counts as the worst result so far, so the GP steers away from it."""
        return max(self._y) if self._y else None

    def replay(self, history: History) -> None:
        """Past jobs become the GP's data (their own parameters and scores)."""
        with self._lock:
            for config, score in history:
                self._given += 1
                self._tell(config, score if score is None or math.isfinite(float(score)) else None)

    def enqueue(self, configs: Iterable[Params]) -> None:
        """Propose these configurations (inside the space) before any new grid point."""
        with self._lock:
            self._queued.extend(
                {p["name"]: c[p["name"]] for p in self._params}
                for c in configs
                if to_optuna(self._params, c) is not None
            )


class SpearmintProposer(GPProposer):
    """Auptimizer's ``spearmint``: keys ``engine`` (GPEIOptChooser/GPEIChooser), ``grid_size``
    20000, ``engine_config``, ``spearmint_dir``, ``random_seed`` 0; adds ``job_id``."""

    name = "spearmint"

    def __init__(self, config: ExperimentConfig) -> None:
        engine = config.raw.get("engine", "GPEIOptChooser")
        if engine not in ("GPEIOptChooser", "GPEIChooser"):
            raise ConfigError(
                f"engine {engine!r} in {config.path or 'experiment.json'} is not a "
                "spearmint chooser aup-tui has — use GPEIOptChooser or GPEIChooser"
            )
        super().__init__(config)
