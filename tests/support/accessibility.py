"""axe-core's accessibility rules, run on a page the browser tests show.

:func:`assert_accessible` fails a test on any *serious* or *critical* axe
violation (missing labels, text below 4.5:1 contrast, duplicate ids, a page
without a language...). axe-core comes inside the ``axe-playwright-python``
wheel: nothing is fetched at run time.

axe needs a running page script (its checks wait on timers), which a context
with JavaScript turned off never runs. Such a page is copied, as the person sees
it (``<noscript>`` content shown, scripts left out), into a scripted page of the
same size at the same address, and axe runs there. Non-text contrast (WCAG
1.4.11: borders, focus rings) is not an axe rule: :func:`contrast_ratio` is for
the tests that check it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page, Route

BLOCKING_IMPACTS = frozenset({"serious", "critical"})
_AXE = Axe()
# A fragment parsed with scripting off turns <noscript> content into elements.
_SCRIPTING_OFF = """() => {
  const probe = document.createElement("div");
  probe.innerHTML = "<noscript><i></i></noscript>";
  return probe.querySelector("noscript i") !== null;
}"""
_SCRIPT = re.compile(r"<script\b[^>]*>.*?</script>", re.IGNORECASE | re.DOTALL)
_NOSCRIPT_TAG = re.compile(r"</?noscript\b[^>]*>", re.IGNORECASE)


def violations(page: Page) -> list[dict[str, Any]]:
    """Every serious or critical axe violation on ``page`` as it is now."""
    if page.evaluate(_SCRIPTING_OFF):
        with _scripted_copy(page) as copy:
            response = _AXE.run(copy).response
    else:
        response = _AXE.run(page).response
    return [v for v in response["violations"] if v.get("impact") in BLOCKING_IMPACTS]


def assert_accessible(page: Page) -> None:
    """Fail, naming each rule and element, when axe finds a serious or critical violation."""
    found = violations(page)
    assert not found, f"axe-core on {page.url}:\n" + "\n".join(_describe(v) for v in found)


def _describe(violation: dict[str, Any]) -> str:
    lines = [f"- {violation['id']} ({violation['impact']}): {violation['help']}"]
    for node in violation["nodes"]:
        lines.append(f"    {', '.join(map(str, node['target']))}: {node.get('failureSummary', '')}")
    return "\n".join(lines)


@contextmanager
def _scripted_copy(page: Page) -> Iterator[Page]:
    html = _NOSCRIPT_TAG.sub("", _SCRIPT.sub("", page.content()))
    url = page.url
    browser = page.context.browser
    assert browser is not None
    context = browser.new_context(viewport=page.viewport_size)
    try:
        copy = context.new_page()

        def serve_copy(route: Route) -> None:
            route.fulfill(status=200, content_type="text/html; charset=utf-8", body=html)

        copy.route(url, serve_copy)
        copy.goto(url)  # the stylesheet and images still come from the real server
        yield copy
    finally:
        context.close()


def relative_luminance(color: tuple[float, float, float]) -> float:
    """WCAG 2.x relative luminance of an sRGB colour given as 0..255 channels."""

    def linear(channel: float) -> float:
        c = channel / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c) for c in color)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast_ratio(a: tuple[float, float, float], b: tuple[float, float, float]) -> float:
    """WCAG contrast ratio between two opaque colours (1 to 21)."""
    high, low = sorted((relative_luminance(a), relative_luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def css_rgb(value: str) -> tuple[float, float, float]:
    """``rgb(r, g, b)`` / ``rgba(r, g, b, 1)`` as computed by the browser, as a tuple."""
    match = re.fullmatch(r"rgba?\(([\d.]+),\s*([\d.]+),\s*([\d.]+)(?:,\s*([\d.]+))?\)", value)
    assert match is not None, f"not an rgb() colour: {value!r}"
    assert match.group(4) in (None, "1"), f"a translucent colour has no fixed contrast: {value}"
    return (float(match.group(1)), float(match.group(2)), float(match.group(3)))


_NON_TEXT_COLOURS = """(element) => {
  element.focus();
  const style = getComputedStyle(element);
  let background = "rgb(255, 255, 255)";  // the canvas, when no ancestor paints one
  for (let node = element.parentElement; node; node = node.parentElement) {
    const colour = getComputedStyle(node).backgroundColor;
    if (colour !== "rgba(0, 0, 0, 0)" && colour !== "transparent") { background = colour; break; }
  }
  return {
    focused: document.activeElement === element,
    outline: style.outlineStyle === "none" ? null : style.outlineColor,
    border: style.borderTopStyle === "none" ? null : style.borderTopColor,
    background,
  };
}"""


def non_text_contrast(page: Page, selector: str) -> dict[str, float]:
    """Contrast (WCAG 1.4.11) of the element's focus ring and border against what surrounds it.

    Focuses the element first; the background is the nearest ancestor's that paints
    one. A ring or border that is not drawn counts as 1:1: nothing to see.
    """
    colours = page.locator(selector).first.evaluate(_NON_TEXT_COLOURS)
    assert colours["focused"], f"{selector} cannot take the focus"
    around = css_rgb(colours["background"])
    return {
        part: contrast_ratio(css_rgb(colours[part]), around) if colours[part] else 1.0
        for part in ("outline", "border")
    }
