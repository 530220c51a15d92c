"""HTML reports rendered in headless Chromium: plots drawn after JavaScript ran, and the page is not blank.

Needs Debian's `chromium` (.ci/run installs it) and plotly (npower[html], in the test extra).
Skips when Chromium is absent outside CI; under CI=true a missing Chromium fails.
"""
from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from npower import analyze, compare, zoo

from conftest import linear_pack

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if IN_CI:
            pytest.fail("chromium is not installed (CI=true): .ci/run installs Debian's chromium package")
        pytest.skip("headless HTML tests need chromium (apt-get install chromium); not found and CI is not set")
    if not IN_CI:
        pytest.importorskip("plotly", reason="HTML plots need plotly: pip install 'npower[html]'")
    return path


def run_chromium(chromium: str, page: Path, *args: str) -> subprocess.CompletedProcess:
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--virtual-time-budget=5000", f"--user-data-dir={page.parent / 'profile'}", *args, page.as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


def png_pixels(path: Path) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB(A) bytes) of an 8-bit RGB or RGBA, non-interlaced PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    offset, chunks, header = 8, [], None
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        body = data[offset + 8:offset + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            chunks.append(body)
        offset += 12 + length
    width, height, depth, color, _, _, interlace = header
    assert depth == 8 and color in (2, 6) and interlace == 0, f"unsupported PNG {header}"
    channels = 3 if color == 2 else 4
    raw, stride = zlib.decompress(b"".join(chunks)), width * channels
    rows, previous = [], bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up, corner = previous[i], previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 0xFF
        rows.append(bytes(line))
        previous = line
    return width, height, [bytes(row[i:i + 3]) for row in rows for i in range(0, stride, channels)]


def check_page(chromium: str, page: Path, plots: list[str]) -> None:
    dom = run_chromium(chromium, page, "--dump-dom").stdout
    for plot in plots:  # plotly marks a div it has drawn with js-plotly-plot and fills it with SVG
        assert f'id="{plot}"' in dom, f"{plot} missing from the DOM"
        start = dom.index(f'id="{plot}"')
        drawn = dom[dom.rindex("<div", 0, start):dom.find("</svg>", start)]
        assert "js-plotly-plot" in drawn and "main-svg" in drawn, f"{plot} was not drawn"
    assert len(re.findall(r'<div class="plot[^"]*js-plotly-plot"', dom)) == len(plots)
    shot = page.with_suffix(".png")
    run_chromium(chromium, page, f"--screenshot={shot}", "--window-size=1400,1000")
    width, height, pixels = png_pixels(shot)
    inked = sum(1 for p in pixels if min(p) < 235)
    coloured = sum(1 for p in pixels if max(p) - min(p) > 60)  # plot marks, not black/grey text
    assert inked > 0.02 * width * height, f"page looks blank: {inked} non-background pixels"
    assert coloured > 0.01 * width * height, f"no plots visible: {coloured} coloured pixels"


def test_compare_report_renders_its_plots(chromium, tmp_path):
    models = [zoo.build(name, weights=False, symbolic_batch=True) for name in ("alexnet", "resnet18", "squeezenet")]
    comparison = compare(models, gpu=linear_pack(), batch=[1, 4, 16],
                         accuracy={"alexnet": 57.1, "resnet18": 69.8, "squeezenet": 58.2})
    page = tmp_path / "compare.html"
    page.write_text(comparison.to_html())
    check_page(chromium, page, ["plot-latency", "plot-energy", "plot-kinds", "plot-pareto"])


def test_analyze_report_renders_its_plots(chromium, tmp_path):
    page = tmp_path / "analyze.html"
    page.write_text(analyze(zoo.build("resnet18", weights=False), gpu=linear_pack()).to_html())
    check_page(chromium, page, ["plot-layers", "plot-kinds"])
