"""The paper's constructions as real weights in the real modules, and the checks behind them.

* :mod:`iha.theory.polynomial`: Polynomial filter with IHA (ceil(sqrt(k)) heads) and MHA
  (k heads), and why MHA with fewer heads cannot.
* :mod:`iha.theory.cpm3`: exact CPM-3 networks (hard attention over cyclic shifts + ReLU MLP).
* :mod:`iha.theory.strictness`: MHA is a special case of IHA, and a strict one.
* :mod:`iha.theory.checks`: every claim as a row (claim, paper, ours, status); ``iha theory``.
"""

from __future__ import annotations

from iha.theory.checks import CheckResult, format_table, run_all_checks
from iha.theory.cpm3 import CPM3Network, build_cpm3_network, heads_needed
from iha.theory.polynomial import (
    PolynomialFilterNet,
    build_iha_polynomial,
    build_mha_polynomial,
    mha_lower_bound,
    one_hot_positions,
)
from iha.theory.strictness import build_inclusion_pair, build_strict_iha, linearity_defect

__all__ = [
    "CPM3Network",
    "CheckResult",
    "PolynomialFilterNet",
    "build_cpm3_network",
    "build_iha_polynomial",
    "build_inclusion_pair",
    "build_mha_polynomial",
    "build_strict_iha",
    "format_table",
    "heads_needed",
    "linearity_defect",
    "mha_lower_bound",
    "one_hot_positions",
    "run_all_checks",
]
