"""labs.results.analysis: the rules that read a table, importable without the load generator."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd

from labs.course import experiments
from labs.results import analysis


def test_the_model_and_the_card_reach_the_rules_without_an_http_client() -> None:
    code = ("import sys, labs.model.sizing, labs.results.analysis, labs.card.extract; "
            "print(sorted(m for m in ('httpx', 'labs.load.loadgen', 'labs.course.experiments') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_experiments_still_offers_the_notebooks_names() -> None:
    assert experiments.find_cliff is analysis.find_cliff
    assert experiments.rate_knee is analysis.rate_knee


def test_the_cliff_is_the_level_before_the_flat_doubling() -> None:
    table = pd.DataFrame({"concurrency": [1, 2, 4, 8], "agg_tok_s": [10, 19, 36, 38],
                          "ttft_s_p95": [0.1, 0.1, 0.2, 0.5]})
    assert analysis.find_cliff(table) == 4
    assert analysis.find_cliff(table.iloc[:3]) is None  # still gaining
