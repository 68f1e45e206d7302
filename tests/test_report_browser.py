"""The HTML report opened in headless Chromium (Debian's ``chromium``, installed by .ci/run): it renders
(a non-blank screenshot) and the page logs nothing to the console (no script, no error)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from onnxprune.cli import main

FIXTURES = Path(__file__).parent / "fixtures"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs Debian's "
                                                          "package; the install failed or is not allowed here)")


def _open(page: Path, shot: Path, size: str = "1280,4000") -> list[str]:
    """Screenshot ``page`` headless; return the page's console lines from Chromium's log."""
    done = subprocess.run([str(CHROMIUM), "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--enable-logging=stderr", "--v=0", f"--screenshot={shot}", f"--window-size={size}",
                           page.resolve().as_uri()], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return [line for line in done.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


def test_report_renders_in_chromium_without_console_errors(tmp_path: Path) -> None:
    page, shot = tmp_path / "report.html", tmp_path / "report.png"
    assert main(["report", str(FIXTURES / "report_run_a.json"), "--bench", str(FIXTURES / "report_bench_a.json"),
                 "-o", str(page)]) == 0
    assert _open(page, shot) == []
    image = Image.open(shot).convert("L")
    assert image.size == (1280, 4000)
    top = image.crop((0, 0, 1280, 3000))  # the sections fill about 3700 px: the top 3000 are not blank
    lo, hi = top.getextrema()
    assert hi - lo > 100
    dark = sum(top.histogram()[:128])
    assert dark > 0.01 * 1280 * 3000  # text, bars and axes, not a white page

    # The check itself sees a page's console errors.
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><body>x<script>undefined_function();</script></body></html>')
    assert any("Uncaught" in line for line in _open(bad, tmp_path / "bad.png", "400,300"))
