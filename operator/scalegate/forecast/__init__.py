"""Forecasting for scalegate: metrics in, a calibrated peak bound and a replica count out.

The operator's forecaster loop needs only these names::

    series = PrometheusSource(settings).fetch(query, lookback_seconds=..., step_seconds=...)
    forecast = forecast_series(series, horizon_seconds, confidence)
    sizing = size_replicas(forecast.upper_bound, capacity, current, bounds=policy.bounds)

Each step raises :class:`ForecastError` (with a ``reason`` for the policy's
``ForecastReady`` condition) instead of returning something unsafe.
"""

from .pipeline import Forecast, forecast_series
from .series import REASONS, ForecastError, load_csv, regularize
from .sizing import Sizing, size_replicas

__all__ = [
    "REASONS",
    "Forecast",
    "ForecastError",
    "Sizing",
    "forecast_series",
    "load_csv",
    "regularize",
    "size_replicas",
]
