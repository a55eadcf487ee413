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
    uses ``y[:o]`` only through the states.

    Parameters
    ----------
    season : int or None
        Points per season; None for Holt's damped trend without a season.
    """

    def __init__(self, season: int | None):
        self.season = season
        self.name = "holt-winters" if season else "holt-damped"

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
