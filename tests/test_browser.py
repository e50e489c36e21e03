"""The audit page in a real browser: headless Chromium (Debian's ``chromium``; .ci/run installs it)
opens the page made for the demo data, reports no console message at all, and its screenshot shows
the heat map (the legend's colours fill many cells, not just the legend's swatches)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from builders import CHECKINS, DEMO, reconcile
from pages import read_page

WINDOW = (1600, 1400)
SWATCH = 16 * 16  # one legend swatch, in pixels
# The style sheet's colours of the states the demo holds most of (reconciler/audit_page.py).
COLOURS = {"present": (0x00, 0x9E, 0x73), "create": (0x56, 0xB4, 0xE9)}


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("the chromium binary is missing: .ci/run installs Debian's chromium package, so CI "
                    "never skips the browser test")
    pytest.skip("the chromium binary is not installed (Debian package chromium; bash .ci/run installs it)")


def open_in_chromium(page: Path, workdir: Path, screenshot: Path | None = None) -> tuple[str, list[str]]:
    """Load ``page`` in headless Chromium: the DOM after loading, and every console message the page
    caused (Chromium logs each one to stderr as a ``CONSOLE`` line; CSP violations included)."""
    args = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--hide-scrollbars", "--force-device-scale-factor=1", f"--user-data-dir={workdir / 'profile'}",
            f"--window-size={WINDOW[0]},{WINDOW[1]}", "--enable-logging=stderr", "--v=0", "--dump-dom"]
    if screenshot is not None:
        args.append(f"--screenshot={screenshot}")
    run = subprocess.run([*args, page.as_uri()], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "HOME": str(workdir)})
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout, [line for line in run.stderr.splitlines() if ":CONSOLE" in line]


@pytest.fixture(scope="module")
def demo_page(tmp_path_factory) -> Path:
    page = tmp_path_factory.mktemp("audit") / "audit.html"
    run = reconcile("audit", "--spec", CHECKINS, "--source", DEMO, "--format", "html", "--out", page)
    assert run.returncode == 0, run.stderr
    return page


def test_the_demo_page_renders_without_console_errors_and_shows_the_heat_map(demo_page, tmp_path, capsys):
    png = tmp_path / "audit.png"
    dom, console = open_in_chromium(demo_page, tmp_path, screenshot=png)
    with capsys.disabled():
        print(f"\nscreenshot of the demo audit page: {png}")
    assert console == []
    heatmap, _ = read_page(dom)  # as the browser built it
    assert len(heatmap.rows) == 25 and {len(row.cells) for row in heatmap.rows} == {52}

    from PIL import Image

    with Image.open(png) as image:
        assert image.size == WINDOW
        pixels = {colour: count for count, colour in image.convert("RGB").getcolors(WINDOW[0] * WINDOW[1])}
    cells = Counter(cell.classes[1] for row in heatmap.rows for cell in row.cells)
    for state, colour in COLOURS.items():
        # every cell of the state is in the window (all 25 rows and 52 weeks fit): most of its
        # 16 x 16 pixels carry the colour, beside the one legend swatch
        seen = pixels.get(colour, 0)
        assert seen >= SWATCH + cells[state] * 12 * 12, (state, seen, cells[state])
    assert cells["present"] == 29 and cells["create"] == 379


def test_a_page_that_loads_anything_is_seen_to_fail(demo_page, tmp_path):
    """The check above can fail: a page that tries to load an image logs a console error."""
    broken = tmp_path / "broken.html"
    broken.write_text(demo_page.read_text(encoding="utf-8").replace(
        "<main>", '<main><img src="https://example.invalid/tracker.png" alt="">', 1), encoding="utf-8")
    _, console = open_in_chromium(broken, tmp_path)
    assert len(console) == 1 and "Content Security Policy" in console[0], console
