"""Point-forecast models behind a small estimator API (statsmodels is used only here).

Each :class:`Estimator` fits an evenly spaced series ``y`` (shape ``(n,)``) and
returns a :class:`FittedModel`. Besides the usual ``forecast(steps)``, a fitted
model gives ``rolling_forecasts(origins, steps)``: the forecasts it would have
made at earlier origins, each from data before that origin only (the model's
states are filtered causally; see each model for what, if anything, was
estimated on the whole window). That is what makes a rolling-origin backtest
cost one fit instead of one fit per origin.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod

import numpy as np

from .series import ForecastError


class FittedModel(ABC):
    """A model fitted to ``y``; forecasts in the units of ``y``."""

    #: For people and the proposal's ``forecast.model``, e.g. ``"holt-winters(additive, damped, seasonal=96)"``.
    description: str
    #: The first origin from which ``rolling_forecasts`` is meaningful (states have settled).
    first_origin: int
    #: Length of the fitted series.
    n: int

    @abstractmethod
    def rolling_forecasts(self, origins: np.ndarray, steps: int) -> np.ndarray:
        """Forecasts made at each origin.

        Parameters
        ----------
        origins : array of int, shape (k,)
            Indices in ``[first_origin, n]``; origin ``o`` uses ``y[:o]`` and
            forecasts ``y[o], ..., y[o + steps - 1]``.
        steps : int
            Steps ahead, ``1 <= steps``.

        Returns
        -------
        numpy.ndarray, shape (k, steps)
        """

    def forecast(self, steps: int) -> np.ndarray:
        """Point forecasts for the ``steps`` points after the data, shape ``(steps,)``."""
        return self.rolling_forecasts(np.array([self.n]), steps)[0]


class Estimator(ABC):
    """Something that can be fitted to a series; cheap to construct."""

    name: str

    @abstractmethod
    def min_length(self) -> int:
        """Least number of points ``fit`` accepts."""

    @abstractmethod
    def fit(self, y: np.ndarray) -> FittedModel:
        """Fit to ``y`` (shape ``(n,)``, finite); raise ``ForecastError('FitFailed', ...)`` on failure."""


# --- seasonal naive -------------------------------------------------------------------------


class SeasonalNaive(Estimator):
    """The value one season earlier; the floor every other model must beat."""

    name = "seasonal-naive"

    def __init__(self, season: int):
        self.season = season

    def min_length(self) -> int:
        return self.season + 1

    def fit(self, y: np.ndarray) -> FittedModel:
        return _SeasonalNaiveFit(np.asarray(y, dtype=float), self.season)


class _SeasonalNaiveFit(FittedModel):
    def __init__(self, y: np.ndarray, season: int):
        self.y, self.season, self.n = y, season, len(y)
        self.first_origin = season
        self.description = f"seasonal-naive(seasonal={season})"

    def rolling_forecasts(self, origins, steps):
        origins = np.asarray(origins)
        ahead = np.arange(steps)
        # Step j ahead of origin o repeats y[o + j - season*(1 + j // season)].
        lag = self.season * (1 + ahead // self.season)
        return self.y[origins[:, None] + ahead[None, :] - lag[None, :]]


# --- exponential smoothing (Holt-Winters and its non-seasonal sibling) ---------------------


class HoltWinters(Estimator):
    """Damped additive-trend exponential smoothing, with an additive season or without.

    Smoothing parameters are estimated once on the whole series (a few
    numbers, so little is learnt from any one origin's future); level, trend
    and season are filtered causally, so ``rolling_forecasts`` at origin ``o``
    uses ``y[:o]`` only through the states. (statsmodels' heuristic start
    values come from the first two seasons, so origins within the second
    season see a little of it through the initial season.)

    Parameters
    ----------
    season : int or None
        Points per season; None for Holt's damped trend without a season.
    """

    def __init__(self, season: int | None):
        self.season = season
        self.name = "holt-winters" if season else "holt"

    def min_length(self) -> int:
        # statsmodels' heuristic start needs two full seasons (or 10 points).
        return 2 * self.season if self.season else 10

    def fit(self, y: np.ndarray) -> FittedModel:
        from statsmodels.tsa.holtwinters import ExponentialSmoothing

        y = np.asarray(y, dtype=float)
        if len(y) < self.min_length():
            raise ForecastError("InsufficientData", f"{self.name} needs {self.min_length()} points, got {len(y)}")
        model = ExponentialSmoothing(
            y,
            trend="add",
            damped_trend=True,
            seasonal="add" if self.season else None,
            seasonal_periods=self.season,
            initialization_method="heuristic",
        )
        try:
            with warnings.catch_warnings():
                # Convergence warnings are expected on flat or very short series; the
                # backtest judges the result, not the optimiser's exit code.
                warnings.simplefilter("ignore")
                # Plain L-BFGS-B from statsmodels' start values: ~5x faster than its
                # default brute-force grid, and the backtest decides whether it is good enough.
                result = model.fit(method="L-BFGS-B", use_brute=False)
        except (ValueError, np.linalg.LinAlgError) as exc:
            raise ForecastError("FitFailed", f"{self.name}: {exc}") from exc
        fitted = _HoltWintersFit(result, self.season, len(y))
        if not np.all(np.isfinite(fitted.level)):
            raise ForecastError("FitFailed", f"{self.name}: the fit diverged")
        return fitted


class _HoltWintersFit(FittedModel):
    def __init__(self, result, season: int | None, n: int):
        params = result.params
        self.n = n
        self.season = season
        self.phi = float(params["damping_trend"])
        self.level = np.asarray(result.level, dtype=float)
        self.trend = np.asarray(result.trend, dtype=float)
        self.seasonal = np.asarray(result.season, dtype=float) if season else None
        self.first_origin = season if season else 2
        self.params = {k: float(params[k]) for k in ("smoothing_level", "smoothing_trend", "damping_trend")}
        if season:
            self.params["smoothing_seasonal"] = float(params["smoothing_seasonal"])
            self.description = f"holt-winters(additive, damped, seasonal={season})"
        else:
            self.description = "holt(additive, damped)"

    def rolling_forecasts(self, origins, steps):
        origins = np.asarray(origins)
        last = origins - 1  # states after the last observation the origin has seen
        ahead = np.arange(1, steps + 1)
        damped = np.cumsum(self.phi**ahead)
        out = self.level[last, None] + damped[None, :] * self.trend[last, None]
        if self.seasonal is not None:
            # The newest estimate of the season's phase for t + h (h <= season reuses
            # the phase one season back; longer horizons step back whole seasons).
            back = self.season * (1 + (ahead - 1) // self.season)
            out = out + self.seasonal[last[:, None] + ahead[None, :] - back[None, :]]
        return out


# --- MSTL (daily + weekly seasons) ----------------------------------------------------------


class MSTLHolt(Estimator):
    """MSTL decomposition (daily and weekly seasons) + damped Holt on the adjusted series.

    The decomposition is not causal (each seasonal estimate uses data on both
    sides), so the backtest origins use a decomposition of ``y[:n - holdout]``
    only: from there on the last estimated cycle of each season is repeated,
    and the seasonally adjusted series is followed by a damped Holt filter.
    Rolling forecasts are therefore honest only from ``n - holdout`` on, which
    is ``first_origin``. The forecast from the end of the data uses a second
    decomposition of all of ``y``, so it is never staler than the backtest's
    (whose profiles age up to ``holdout``): its bounds err on the safe side.

    Parameters
    ----------
    season : int
        Points per day; the weekly season is ``7 * season``.
    holdout : int
        Trailing points left out of the backtest's decomposition.
    """

    name = "mstl"

    def __init__(self, season: int, holdout: int):
        self.season = season
        self.periods = (season, 7 * season)
        self.holdout = holdout

    def min_length(self) -> int:
        # statsmodels drops a season unless it fits more than twice: two weeks and a day
        return 2 * self.periods[1] + self.season + self.holdout

    def fit(self, y: np.ndarray) -> FittedModel:
        y = np.asarray(y, dtype=float)
        if len(y) < self.min_length():
            raise ForecastError("InsufficientData", f"mstl needs {self.min_length()} points, got {len(y)}")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                backtest = self._decompose_and_follow(y, len(y) - self.holdout)
                final = self._decompose_and_follow(y, len(y))
        except (ValueError, np.linalg.LinAlgError) as exc:
            raise ForecastError("FitFailed", f"mstl: {exc}") from exc
        return _MSTLFit(backtest, final, len(y) - self.holdout, self.periods)

    def _decompose_and_follow(self, y: np.ndarray, split: int) -> tuple["_HoltWintersFit", np.ndarray]:
        """Seasonal profile from ``y[:split]`` (extended past it) and a Holt fit of ``y`` minus it."""
        from statsmodels.tsa.holtwinters import ExponentialSmoothing
        from statsmodels.tsa.seasonal import MSTL

        # LOESS for trend and low-pass every quarter day, interpolated between:
        # those components are smooth at that scale, and it is ~15x faster.
        jump = max(1, self.season // 4)
        stl_kwargs = {"seasonal_jump": 1, "trend_jump": jump, "low_pass_jump": jump}
        decomposition = MSTL(y[:split], periods=self.periods, stl_kwargs=stl_kwargs).fit()
        parts = np.asarray(decomposition.seasonal, dtype=float).reshape(split, -1)
        if parts.shape[1] != len(self.periods):
            raise ValueError(f"decomposition kept {parts.shape[1]} of {len(self.periods)} seasons")
        # Each season's last cycle, repeated past the split.
        ahead = np.arange(len(y) - split + _MAX_STEPS)
        future = sum(parts[split - period + (ahead % period), column] for column, period in enumerate(self.periods))
        profile = np.concatenate([parts.sum(axis=1), future])
        holt = ExponentialSmoothing(
            y - profile[: len(y)], trend="add", damped_trend=True, initialization_method="heuristic"
        ).fit(method="L-BFGS-B", use_brute=False)
        return _HoltWintersFit(holt, None, len(y)), profile


#: Longest forecast, in points, that an MSTL fit prepares its seasonal profile for.
_MAX_STEPS = 2016


class _MSTLFit(FittedModel):
    def __init__(self, backtest, final, split: int, periods: tuple[int, int]):
        (self.holt, self.profile), (self.final_holt, self.final_profile) = backtest, final
        self.n = self.holt.n
        self.first_origin = split
        self.description = f"mstl(seasonal={periods[0]},{periods[1]}) + holt(additive, damped)"

    def rolling_forecasts(self, origins, steps):
        origins = np.asarray(origins)
        if steps > _MAX_STEPS:
            raise ValueError(f"mstl forecasts at most {_MAX_STEPS} steps")
        ahead = np.arange(steps)[None, :]
        out = self.holt.rolling_forecasts(origins, steps) + self.profile[origins[:, None] + ahead]
        at_end = origins == self.n
        if at_end.any():
            out[at_end] = self.final_holt.rolling_forecasts(origins[at_end], steps) + self.final_profile[
                origins[at_end, None] + ahead
            ]
        return out


# --- error correction (any model + its latest one-step error, carried forward) -------------


class ErrorCorrected(FittedModel):
    """A fitted model whose forecasts also carry its latest one-step error forward.

    Load that is above its forecast now tends to stay above it for a while (a
    burst, a slow day), longer than a smoothed level follows. At origin ``o``
    the latest error is ``e = y[o - 1] - (the base model's one-step forecast of
    it)``; step ``h`` ahead then adds ``beta[h] * e``, with one ``beta`` per
    step fitted by least squares (no intercept) on every origin whose outcome
    is known. Like the smoothing parameters, ``beta`` is a few numbers
    estimated once on the whole series; the errors themselves are causal.

    By default the origins are those whose outcomes are known for every step
    asked for; with ``partial``, each step's ``beta`` uses every origin whose
    outcome at that step is known (up to the newest: a day-long horizon would
    otherwise leave the last day out of even the next step's weight).
    """

    def __init__(self, base: FittedModel, y: np.ndarray, partial: bool = False):
        self.base, self.y, self.n = base, np.asarray(y, dtype=float), base.n
        self.partial = partial
        # origin o needs the one-step forecast made at o - 1
        self.first_origin = base.first_origin + 1
        self.description = f"{base.description} + error correction"
        origins = np.arange(base.first_origin, self.n)
        self._errors = np.zeros(self.n + 1)
        self._errors[origins + 1] = self.y[origins] - base.rolling_forecasts(origins, 1)[:, 0]
        self._betas: dict[int, np.ndarray] = {}

    def betas(self, steps: int) -> np.ndarray:
        """Least-squares weight of the latest error for each step ahead, shape ``(steps,)``."""
        if steps not in self._betas:
            last = self.n - 1 if self.partial else self.n - steps
            origins = np.arange(self.first_origin, last + 1)
            beta = np.zeros(steps)
            if len(origins):
                errors = self._errors[origins]
                positions = origins[:, None] + np.arange(steps)[None, :]
                known = positions < self.n
                actual = self.y[np.minimum(positions, self.n - 1)] if known.all() else np.where(
                    known, self.y[np.minimum(positions, self.n - 1)], np.nan)
                ahead = actual - self.base.rolling_forecasts(origins, steps)
                # in units of the largest error, so that sums of squares neither overflow nor underflow
                unit = float(np.max(np.abs(errors)))
                if unit > 0:
                    errors, ahead = errors / unit, ahead / unit
                    if known.all():
                        beta = errors @ ahead / float(errors @ errors)
                    else:  # each step over the origins that know it
                        beta = np.nansum(errors[:, None] * ahead, axis=0) / ((errors**2) @ known)
            # a weight that is not a number would make every forecast one; carry nothing instead
            self._betas[steps] = np.where(np.isfinite(beta), beta, 0.0)
        return self._betas[steps]

    def rolling_forecasts(self, origins, steps):
        origins = np.asarray(origins)
        base = self.base.rolling_forecasts(origins, steps)
        return base + self._errors[origins, None] * self.betas(steps)[None, :]
