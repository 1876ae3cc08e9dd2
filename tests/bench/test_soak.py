"""`make soak` (bench/soak.py): its growth verdict, and a short soak against real processes.

The short soak runs ``python -m bench.soak`` for 12 s (a real ``bridge serve`` and
iMIS simulator, on PostgreSQL when ``BRIDGE_TEST_DATABASE_URL`` is set): every
kind of the mix completes, bad input gets its 4xx and never a 5xx (SECURITY G5),
and the report and JSON have their shape. Growth is judged by the unit tests
here, not in 12 s (the first third of a run is warm-up).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.soak import BAD_KINDS, growth, slope_per_minute

ROOT = Path(__file__).resolve().parents[2]


def _series(
    value_at: Callable[[float], float], minutes: float = 10, every: float = 10
) -> list[tuple[float, float]]:
    rng = random.Random(7)
    points = []
    t = 0.0
    while t <= minutes * 60:
        points.append((t, value_at(t) + rng.uniform(-0.8, 0.8)))
        t += every
    return points


def test_a_flat_series_after_warm_up_does_not_grow() -> None:
    # 60 MB climbing to 100 MB in the first three minutes (warm-up), then flat with noise.
    result = growth(_series(lambda t: min(100.0, 60 + t / 4.5)), tolerance=5, slope_tolerance=1.5)
    assert result["grows"] is False, result
    assert abs(result["delta"]) < 2
    assert result["why"] == "flat"


def test_a_steady_leak_grows() -> None:
    # 2 MB a minute: the last third is ~7 MB above the middle third.
    result = growth(_series(lambda t: 100 + t / 30), tolerance=5, slope_tolerance=1.5)
    assert result["grows"] is True
    assert result["slope_per_minute"] == pytest.approx(2.0, abs=0.3)
    assert "last third" in result["why"]
    assert "slope" in result["why"]


def test_a_slow_leak_is_caught_by_the_slope_alone() -> None:
    # 1 MB a minute stays under a 5 MB step between the thirds, not under 0.5 MB/min.
    result = growth(_series(lambda t: 100 + t / 60), tolerance=5, slope_tolerance=0.5)
    assert result["grows"] is True
    assert result["why"].startswith("slope")


def test_a_steep_but_small_rise_in_a_short_run_is_noise() -> None:
    # 15 s, a sample a second, +0.4 MB: 1.6 MB/min, but less than 2 MB in all.
    points = [(float(t), 100 + t * 0.4 / 15) for t in range(16)]
    result = growth(points, tolerance=5, slope_tolerance=1.5, min_rise=2)
    assert result["slope_per_minute"] > 1.5
    assert result["grows"] is False
    assert growth(points, tolerance=5, slope_tolerance=1.5)["grows"] is True


def test_one_spike_moves_neither_median() -> None:
    points = _series(lambda t: 100.0)
    points[-3] = (points[-3][0], 150.0)
    assert growth(points, tolerance=5, slope_tolerance=None)["grows"] is False


def test_too_few_samples_decide_nothing() -> None:
    assert growth([(0, 1.0), (10, 50.0)], tolerance=1, slope_tolerance=1)["grows"] is None
    assert slope_per_minute([(0, 1.0)]) is None
    assert slope_per_minute([(0, 1.0), (60, 3.0)]) == pytest.approx(2.0)


@pytest.mark.slow
@pytest.mark.postgres
def test_g5_d8_a_short_soak_has_no_5xx_and_reports_every_kind(tmp_path: Path) -> None:
    """12 s of the mix against `bridge serve`: no 5xx, bad input gets its 4xx (G5);
    the report has requests per kind, RSS and descriptors over time and the database's
    rows (whose sessions the purge of D8 bounds in a long run)."""
    out = tmp_path / "soak.json"
    args = ["--minutes", "0.2", "--sample-every", "1", "--connections", "4", "--out", str(out)]
    # Growth is not judged in 12 s: warm-up dominates (the unit tests above judge it).
    args += ["--rss-tolerance-mb", "1000", "--rss-slope-mb-min", "1000", "--fd-tolerance", "1000"]
    if os.environ.get("BRIDGE_TEST_DATABASE_URL"):
        args += ["--database", "postgresql"]
    done = subprocess.run(
        [sys.executable, "-m", "bench.soak", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    report = json.loads(out.read_text())

    assert report["passed"] is True
    assert report["total"]["server_errors"] == 0
    assert report["total"]["unexpected"] == 0, report["problems"]
    assert report["total"]["transport"] == 0, report["problems"]
    kinds = report["kinds"]
    for kind in ("S1", "S2", "S3", "S4", "S6"):
        assert kinds[kind]["units"] > 0, kind
        assert not any(status.startswith("5") for status in kinds[kind]["statuses"])
    bad = {k: v for k, v in kinds.items() if k.startswith("bad: ")}
    assert set(bad) == {f"bad: {what}" for what in BAD_KINDS}
    for kind, tally in bad.items():
        assert tally["units"] > 0, kind
        if kind == "bad: unknown token to introspect":  # RFC 7662: 200, inactive
            assert tally["notes"] == {"active: False": tally["units"]}
            continue
        # Every other bad input was answered with a 4xx (the sign-in form's GET is a 200).
        assert any(status.startswith("4") for status in tally["statuses"]), (kind, tally)
    assert kinds["S6"]["notes"].get("active: True", 0) > 0

    samples = report["samples"]
    assert len(samples) >= 10
    assert all(s["rss_mb"] > 20 and s["fds"] > 5 for s in samples)
    assert samples[-1]["rows"]["tokens"] > 0
    assert samples[-1]["rows"]["browser_sessions"] > 0
    assert all(s["metrics_status"] == 200 for s in samples)
    assert report["rss_growth"]["grows"] is False
    assert report["log"]["error_lines"] == 0
    assert report["log"]["graceful_shutdowns"] == 1

    text = done.stdout
    assert "**PASS**" in text
    assert "**0 5xx**" in text
    assert "| S2 code flow |" in text
    assert "| t | RSS MB | fds |" in text
    assert "Housekeeping" in text
