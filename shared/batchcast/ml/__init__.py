"""Forecasting on DataFrames: declarative features, a global quantile model, a rolling backtest.

This package never touches storage or cloud clients: the pipeline's steps read partitions, call
:func:`to_series`, :meth:`ForecastModel.fit` / :meth:`ForecastModel.predict` and :func:`backtest`
(or :func:`fit_and_backtest`, which fits the model and the folds together), and write the results.
"""

from batchcast.ml.backtest import BacktestResult, backtest, fit_and_backtest
from batchcast.ml.features import feature_names, make_features, to_series
from batchcast.ml.model import ForecastModel, quantile_column

__all__ = [
    "BacktestResult",
    "ForecastModel",
    "backtest",
    "feature_names",
    "fit_and_backtest",
    "make_features",
    "quantile_column",
    "to_series",
]
