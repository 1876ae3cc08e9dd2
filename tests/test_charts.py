"""The sign-in chart (:mod:`bridge.charts`): well-formed SVG whose bars, labels and text
alternatives say what the counters say."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from bridge.charts import COLOURS, Chart, nice_maximum, sign_in_chart
from bridge.stats import Bucket, Outcome, Series

SVG = "{http://www.w3.org/2000/svg}"
HOUR = 3600
DAY = 24 * HOUR
START = 1_700_000_000 - 1_700_000_000 % DAY  # a midnight UTC (Tue 14 Nov 2023)


def hours(counts: dict[int, dict[Outcome, int]]) -> Series:
    buckets = tuple(Bucket(START + i * HOUR, counts.get(i, {})) for i in range(24))
    return Series(title="Last 24 hours", step_seconds=HOUR, buckets=buckets)


def days(counts: dict[int, dict[Outcome, int]]) -> Series:
    buckets = tuple(Bucket(START + i * DAY, counts.get(i, {})) for i in range(30))
    return Series(title="Last 30 days", step_seconds=DAY, buckets=buckets)


def parse(chart: Chart) -> ET.Element:
    return ET.fromstring(str(chart.svg))


def bars(svg: ET.Element) -> list[ET.Element]:
    return [r for r in svg.iter(f"{SVG}rect") if r.get("class") == "bar"]


def texts(svg: ET.Element, cls: str) -> list[str]:
    return [t.text or "" for t in svg.iter(f"{SVG}text") if t.get("class") == cls]


def contrast_with_white(colour: str) -> float:
    def channel(c: float) -> float:
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5))
    luminance = 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)
    return 1.05 / (luminance + 0.05)


def test_bars_are_stacked_per_hour_and_scaled_to_the_axis() -> None:
    series = hours(
        {
            23: {Outcome.SUCCESS: 6, Outcome.WRONG_PASSWORD: 2, Outcome.NO_EMAIL: 1},
            5: {Outcome.SUCCESS: 3},
        }
    )
    svg = parse(sign_in_chart(series, chart_id="desk-hours"))
    drawn = bars(svg)
    assert [(b.get("data-outcome"), b.get("data-count")) for b in drawn] == [
        ("success", "3"),
        ("success", "6"),
        ("wrong_password", "2"),
        ("no_email", "1"),
    ]
    assert drawn[1].get("fill") == COLOURS[Outcome.SUCCESS]
    assert drawn[2].get("fill") == COLOURS[Outcome.WRONG_PASSWORD]
    # Heights are proportional to the counts; the last hour's stack is contiguous.
    height = {b.get("data-count"): float(b.get("height", "0")) for b in drawn[1:]}
    assert height["6"] == pytest.approx(3 * height["2"], abs=0.2)
    assert height["2"] == pytest.approx(2 * height["1"], abs=0.2)
    success, wrong = drawn[1], drawn[2]
    top_of_success = float(success.get("y", "0"))
    assert float(wrong.get("y", "0")) + float(wrong.get("height", "0")) == pytest.approx(
        top_of_success, abs=0.2
    )
    # The stack of 9 reaches the y axis' top label (10) proportionally; labels are round.
    assert texts(svg, "y-label") == ["0", "5", "10"]
    # Each bar says what it is when pointed at.
    tips = [b.find(f"{SVG}title") for b in drawn]
    assert [t.text if t is not None else None for t in tips][1] == "14 Nov 23:00: 6 success"


def test_axis_labels_and_legend() -> None:
    svg = parse(sign_in_chart(hours({0: {Outcome.THROTTLED: 1}})))
    assert texts(svg, "x-label") == ["05:00", "11:00", "17:00", "23:00"]
    assert texts(svg, "axis-title") == ["Sign-ins", "Hour (UTC)"]
    legend = [g.get("data-outcome") for g in svg.iter(f"{SVG}g") if g.get("class") == "legend"]
    # The main outcomes always, an extra reason when it occurred, in one order.
    assert legend == [
        "success",
        "wrong_password",
        "access_rule",
        "no_email",
        "shared_email",
        "imis_unavailable",
        "throttled",
    ]
    labels = [t.text for g in svg.iter(f"{SVG}g") for t in g.iter(f"{SVG}text")]
    assert "Throttled (1)" in labels
    assert "Success (0)" in labels

    month = parse(sign_in_chart(days({29: {Outcome.SUCCESS: 2}})))
    assert texts(month, "x-label") == ["15 Nov", "22 Nov", "29 Nov", "06 Dec", "13 Dec"]
    assert texts(month, "axis-title") == ["Sign-ins", "Day (UTC)"]


def test_title_and_description_name_the_chart_for_assistive_technology() -> None:
    series = hours({3: {Outcome.SUCCESS: 4, Outcome.ACCESS_RULE: 1, Outcome.SHARED_EMAIL: 2}})
    svg = parse(sign_in_chart(series, chart_id="desk hours"))
    assert svg.get("role") == "img"
    assert svg.get("aria-labelledby") == "desk-hours-title desk-hours-desc"
    title, desc = svg.find(f"{SVG}title"), svg.find(f"{SVG}desc")
    assert title is not None
    assert desc is not None
    assert title.get("id") == "desk-hours-title"
    assert title.text == "Sign-ins, last 24 hours"
    assert desc.text == (
        "Last 24 hours: 4 successful sign-ins, 3 refused (1 access rule, 2 shared email)."
    )
    assert "style" not in str(sign_in_chart(series))  # no inline style: the page CSP holds


def test_the_data_table_holds_every_number() -> None:
    series = days({0: {Outcome.SUCCESS: 1}, 29: {Outcome.WRONG_PASSWORD: 3}})
    chart = sign_in_chart(series)
    hidden = ET.fromstring(str(chart.table))
    assert hidden.get("class") == "sr-only"
    [table] = list(hidden)
    caption = table.find("caption")
    assert caption is not None
    assert caption.text == "Sign-ins, last 30 days"
    header = [th.text for th in table.iter("th") if th.get("scope") == "col"]
    assert header == [
        "Day (UTC)",
        "Success",
        "Wrong password",
        "Access rule",
        "No email",
        "Shared email",
        "iMIS unavailable",
        "Total",
    ]
    body = table.find("tbody")
    assert body is not None
    rows = [[c.text for c in row] for row in body]
    assert len(rows) == 30
    assert rows[0] == ["Tue 14 Nov", "1", "0", "0", "0", "0", "0", "1"]
    assert rows[-1] == ["Wed 13 Dec", "0", "3", "0", "0", "0", "0", "3"]
    foot = table.find("tfoot")
    assert foot is not None
    assert [c.text for c in foot[0]] == ["Total", "1", "3", "0", "0", "0", "0", "4"]
    # As HTML: one figure holding both, well-formed.
    figure = ET.fromstring(chart.__html__())
    assert figure.tag == "figure"
    assert [child.tag for child in figure] == [f"{SVG}svg", "div"]


def test_an_empty_series_draws_no_bar_and_says_so() -> None:
    svg = parse(sign_in_chart(hours({})))
    assert bars(svg) == []
    desc = svg.find(f"{SVG}desc")
    assert desc is not None
    assert desc.text == "Last 24 hours: no sign-ins."
    assert texts(svg, "y-label") == ["0", "1"]


def test_every_colour_reaches_3_to_1_against_white_and_differs() -> None:
    assert set(COLOURS) == set(Outcome)
    assert len(set(COLOURS.values())) == len(COLOURS)
    for outcome, colour in COLOURS.items():
        assert contrast_with_white(colour) >= 3.0, outcome


@pytest.mark.parametrize(
    ("value", "top"), [(0, 1), (1, 1), (2, 2), (3, 5), (9, 10), (11, 20), (51, 100), (999, 1000)]
)
def test_the_axis_top_is_a_round_number(value: int, top: int) -> None:
    assert nice_maximum(value) == top
