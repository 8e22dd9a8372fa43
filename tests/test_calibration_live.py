"""The calibration against the live server: it measures, fits, saves, and is reused.

What it measured is then saved where notebook 01 looks (results/calibration.json) unless one
is there already: 01 runs against this same server minutes later, and its `ensure` reuses it
instead of measuring the same server a second time (35 s on a 2-core CPU).
"""

from __future__ import annotations

import pytest

import labs
from labs.model import calibration


@pytest.mark.server
def test_calibrate_fits_the_live_server_and_is_reused(live: labs.Connection, tmp_path) -> None:
    path = tmp_path / "calibration.json"
    cal = calibration.ensure(live, path=path, progress=False)
    assert path.is_file() and len(cal.step_points) >= 4 and len(cal.ttft_points) >= 2
    limits = calibration.server_limits(live)
    assert cal.limits == limits and cal.limits.pool_tokens == labs.metrics.scrape(
        live.base_url).cache_config().pool_tokens
    steps = cal.steps
    assert steps.fixed_s > 0 and steps.prefill_tok_s > 0 and steps.per_seq_s >= 0
    # Bigger batches take longer steps, and the fit follows the points it was fitted to.
    points = sorted((p for p in cal.step_points if "context" not in p.label),
                    key=lambda p: p.batch)
    assert points[-1].step_s > points[0].step_s
    assert max(abs(r["error_pct"]) for r in cal.fit_errors()) < 50
    again = calibration.ensure(live, path=path, progress=False)
    assert again.measured_at == cal.measured_at  # reused, not measured again
    if not calibration.default_path().is_file():
        cal.save(calibration.default_path())
