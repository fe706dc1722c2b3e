"""Reproductions of the paper's experiments at CPU scale: `iha reproduce synthetic [--quick]`.

- :mod:`iha.reproduce.plans`: the experiments and their sizes (full / quick / tiny);
- :mod:`iha.reproduce.models`: the 1-layer MHA / IHA models;
- :mod:`iha.reproduce.train`: one run with early stopping;
- :mod:`iha.reproduce.synthetic`: running every job, summarising over seeds;
- :mod:`iha.reproduce.report`: markdown report and plots;
- :mod:`iha.reproduce.stats`, :mod:`iha.reproduce.early_stopping`: the statistics and stopping.
"""

from iha.reproduce.early_stopping import EarlyStopping
from iha.reproduce.stats import Interval, mean_ci, paired_difference_ci, t_quantile

__all__ = ["EarlyStopping", "Interval", "mean_ci", "paired_difference_ci", "t_quantile"]
