"""HTML reports (onnxprune report, compress --report) built from stored digits-CNN run JSON fixtures."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from onnxprune.cli import main
from onnxprune.reporting.flags import why_not_faster
from onnxprune.reporting.page import SECTIONS, build_html
from onnxprune.reporting.plots import pareto
from onnxprune.reporting.runs import view

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).resolve().parents[1]
RUN_A, RUN_B, BENCH_A = (FIXTURES / f"report_{n}.json" for n in ("run_a", "run_b", "bench_a"))
URL = re.compile(r"(https?:|ftp:|//[a-z0-9.-]+\.[a-z]{2,}|url\((?!#)|<script|<link|<img|<iframe)", re.I)


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def _sections(page: str) -> list[str]:
    return re.findall(r'<section id="([a-z]+)">', page)


def test_report_cli_writes_every_section_without_urls(tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    assert main(["report", str(RUN_A), "--bench", str(BENCH_A), "-o", str(out)]) == 0
    page = out.read_text()
    assert _sections(page) == [sid for sid, _ in SECTIONS]
    assert URL.search(page) is None
    assert page.count("<svg") == 4  # groups, search curve, candidates, op-type profile
    run = _load(RUN_A)
    for text in ("98.33", "451,904", "230,720", "graph output &#x27;output&#x27; keeps its shape", "Conv",
                 "onnxprune compress models/digits_cnn.onnx --target 0.5", "onnxruntime", run["versions"]["onnx"],
                 "CPUExecutionProvider, device auto, 1 threads", "0.583x"):
        assert text in page, text
    assert "not measured in this run: bits per layer" in page  # float run
    assert "not measured in this run: op-type profile" not in page


def test_missing_parts_say_not_measured() -> None:
    run = _load(RUN_A)
    for key in ("history", "frozen", "run", "command", "versions", "best"):
        run.pop(key)
    run["after"].pop("bops")
    page = build_html([run])
    assert _sections(page) == [sid for sid, _ in SECTIONS]
    for part in ("per-episode history", "candidate accuracies", "measured latency", "op-type profile",
                 "the command line", "package versions", "frozen groups"):
        assert f"not measured in this run: {part}" in page, part
    assert re.search(r"<td>BOPs</td><td>not measured in this run</td>", page)
    assert page.count("<svg") == 1  # group widths only


def test_quantized_run_shows_bits_and_compare_side_by_side(tmp_path: Path) -> None:
    quant = copy.deepcopy(_load(RUN_A))
    quant["bits"] = {"conv1": [8, 8], "conv2": [4, 8], "fc": [32, 32]}
    assert view(quant, "q").quantized
    assert build_html([quant]).count("<svg") == 4  # groups, bits, search, candidates
    out = tmp_path / "compare.html"
    assert main(["report", str(RUN_A), str(RUN_B), "-o", str(out)]) == 0
    page = out.read_text()
    assert _sections(page) == [sid for sid, _ in SECTIONS]
    assert URL.search(page) is None
    assert "onnxprune comparison: report_run_a vs report_run_b" in page
    compare = page[page.index("<table>"):page.index("</table>")]
    assert compare.count("<tr>") == 3 and "report_run_a" in compare and "report_run_b" in compare
    assert "random" in compare and "agmc" in compare


def test_flags_and_pareto() -> None:
    flags = why_not_faster(view(_load(RUN_B), "b"))
    assert any("not multiples of 8" in f and "--round-to 8" in f for f in flags)
    assert not any("multiples" in f for f in why_not_faster(view(_load(RUN_A), "a")))
    assert pareto([(3, 90), (1, 80), (2, 70), (2, 85), (4, 89), (5, 95)]) == [(1, 80), (2, 85), (3, 90), (5, 95)]


@pytest.mark.parametrize("content", [None, "{not json", "[1, 2]", '{"before": {"macs": 1}}',
                                     '{"before": {"macs": 1}, "after": {"macs": 1}, "groups": [{"id": 0}]}'])
def test_bad_run_json_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             content: str | None) -> None:
    run = tmp_path / "run.json"
    if content is not None:
        run.write_text(content)
    assert main(["report", str(run), "-o", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "run.json" in err and "Traceback" not in err
    assert not (tmp_path / "r.html").exists()


def test_compress_report_writes_html_and_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    html, js = tmp_path / "run.html", tmp_path / "run.json"
    args = ["compress", "models/digits_cnn.onnx", "--target", "0.5", "--round-to", "8",
            "-o", str(tmp_path / "pruned.onnx"), "--json", str(js), "--report", str(html)]
    assert main(args) == 0
    run = _load(js)
    assert run["command"] == ["onnxprune", *args]
    assert {"python", "onnx", "onnxruntime", "numpy"} <= set(run["versions"])
    assert [g["id"] for g in run["frozen"]] == [3] and len(run["history"]) == 1
    page = html.read_text()
    assert _sections(page) == [sid for sid, _ in SECTIONS] and URL.search(page) is None
    assert "val top-1 %</td><td>not measured in this run (data-free)" in page
    assert main([*args[:-1], str(tmp_path / "missing" / "r.html")]) == 2
