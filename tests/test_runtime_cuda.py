"""CUDA provider set-up without a GPU: library preloading and the fallback rules, with a stand-in onnxruntime."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from onnxprune.errors import DataError, RuntimeUnavailable
from onnxprune.evaluate import runtime as runtime_module
from onnxprune.evaluate.runtime import CPU_EP, CUDA_EP, Runtime, preload_cuda_libraries


def _fake_ort(available: list[str], used: list[str], calls: list[str], preload: Any = "default",
              seen: list[Any] | None = None) -> Any:
    """An object with the parts of onnxruntime that ``Runtime`` touches; sessions report ``used``.

    ``seen`` collects the ``providers`` argument of every session created.
    """
    seen = [] if seen is None else seen

    def default_preload() -> None:
        calls.append("preload")
        print("Failed to load libcublasLt.so.13: not found")  # what ORT prints; must not reach stdout

    class Options:
        def add_session_config_entry(self, *_: str) -> None:
            pass

    class Session:
        def __init__(self, *_: Any, **kwargs: Any) -> None:
            calls.append("session")
            seen.append(kwargs.get("providers"))

        def get_providers(self) -> list[str]:
            return list(used)

        def get_inputs(self) -> list[Any]:
            return []

        def get_outputs(self) -> list[Any]:
            return []

    fake = SimpleNamespace(get_available_providers=lambda: list(available), SessionOptions=Options,
                           InferenceSession=Session, __version__="0.0-fake",
                           GraphOptimizationLevel=SimpleNamespace(ORT_DISABLE_ALL=0))
    if preload == "default":
        fake.preload_dlls = default_preload
    elif preload is not None:
        fake.preload_dlls = preload
    return fake


def test_preload_output_goes_to_the_log_not_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[str] = []
    preload_cuda_libraries(_fake_ort([CUDA_EP, CPU_EP], [CUDA_EP], calls))
    assert calls == ["preload"] and capsys.readouterr().out == ""


def test_preload_is_skipped_on_old_ort_and_survives_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("DEBUG", logger=runtime_module.__name__):
        preload_cuda_libraries(_fake_ort([CUDA_EP, CPU_EP], [CUDA_EP], [], preload=None))  # no preload_dlls
        assert caplog.records == []

        def broken() -> None:
            raise RuntimeError("Invalid parameter of directory=None. The directory does not exist!")

        preload_cuda_libraries(_fake_ort([CUDA_EP, CPU_EP], [CUDA_EP], [], preload=broken))  # logged, not raised
    assert [r.getMessage() for r in caplog.records] == [
        "onnxruntime.preload_dlls failed: RuntimeError: Invalid parameter of directory=None. The directory does not exist!"]


@pytest.mark.parametrize(("device", "available", "preloads"), [
    ("cuda", [CUDA_EP, CPU_EP], True), ("auto", [CUDA_EP, CPU_EP], True),
    ("auto", [CPU_EP], False), ("cpu", [CUDA_EP, CPU_EP], False)])
def test_runtime_preloads_cuda_libraries_only_when_cuda_may_run(
        monkeypatch: pytest.MonkeyPatch, device: str, available: list[str], preloads: bool) -> None:
    calls: list[str] = []
    monkeypatch.setattr(runtime_module, "import_ort", lambda: _fake_ort(available, [CPU_EP], calls))
    Runtime(device)  # type: ignore[arg-type]
    assert calls == (["preload"] if preloads else [])


def test_cuda_that_does_not_start_is_an_error_for_cuda_and_a_cpu_run_for_auto(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"stand-in")  # the fake session never reads it
    calls: list[str] = []
    monkeypatch.setattr(runtime_module, "import_ort", lambda: _fake_ort([CUDA_EP, CPU_EP], [CPU_EP], calls))
    with pytest.raises(RuntimeUnavailable, match="--device cuda.*use --device cpu"):
        Runtime("cuda").create(model)
    auto = Runtime("auto")
    with caplog.at_level("WARNING", logger=runtime_module.__name__):
        first, second = auto.create(model), auto.create(model)
    assert first.info.provider == second.info.provider == CPU_EP
    warnings = [r for r in caplog.records if "could not start the CUDA EP" in r.getMessage()]
    assert len(warnings) == 1  # once per runtime, not once per candidate


@pytest.mark.parametrize("search", ["EXHAUSTIVE", "HEURISTIC"])
def test_cuda_sessions_get_the_cudnn_search_and_cpu_sessions_get_none(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, search: str) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"stand-in")
    seen: list[Any] = []
    monkeypatch.setattr(runtime_module, "import_ort",
                        lambda: _fake_ort([CUDA_EP, CPU_EP], [CUDA_EP, CPU_EP], [], seen=seen))
    Runtime("cuda", conv_search=search).create(model)  # type: ignore[arg-type]
    Runtime("cpu", conv_search=search).create(model)  # type: ignore[arg-type]
    assert seen == [[(CUDA_EP, {"cudnn_conv_algo_search": search}), CPU_EP], [CPU_EP]]
    with pytest.raises(DataError, match="conv_search 'FAST'"):
        Runtime("cpu", conv_search="FAST")  # type: ignore[arg-type]
