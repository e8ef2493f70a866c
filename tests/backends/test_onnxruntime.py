"""ONNX Runtime: provider choice and fallback, decided from what the installed onnxruntime offers."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from helpers.cli import one_line_error, run

from bertonnx import Embedder, OptionError, ProviderError
from bertonnx.backends.onnxruntime import (
    CPU,
    CUDA,
    TENSORRT,
    check_active,
    check_threads,
    choose_providers,
    provider_options,
)

CPU_ONLY = [CPU]
WITH_CUDA = [TENSORRT, CUDA, CPU]
CUDA_ONLY = [CUDA, CPU]


@pytest.mark.parametrize(
    "requested,available,expected",
    [
        ("cpu", CPU_ONLY, [CPU]),
        ("cpu", WITH_CUDA, [CPU]),
        ("auto", CPU_ONLY, [CPU]),
        ("auto", WITH_CUDA, [CUDA, CPU]),
        ("cuda", WITH_CUDA, [CUDA, CPU]),
        ("tensorrt", WITH_CUDA, [TENSORRT, CUDA, CPU]),
    ],
)
def test_provider_choice(requested: str, available: list[str], expected: list[str]) -> None:
    assert choose_providers(requested, available) == expected


def test_cuda_without_cuda_names_what_is_available() -> None:
    with pytest.raises(ProviderError, match="provider 'cuda' is not available; this onnxruntime offers CPUExecution"):
        choose_providers("cuda", CPU_ONLY)


def test_tensorrt_without_tensorrt_names_what_is_available() -> None:
    with pytest.raises(ProviderError, match="provider 'tensorrt' is not available; this onnxruntime offers CUDA"):
        choose_providers("tensorrt", CUDA_ONLY)


def test_unknown_provider_names_the_choices() -> None:
    with pytest.raises(OptionError, match="unknown provider 'tpu'; expected one of auto, cpu, cuda, tensorrt"):
        choose_providers("tpu", WITH_CUDA)


def test_tensorrt_gets_fp16_and_an_engine_cache(tmp_path: Path) -> None:
    name, options = provider_options(TENSORRT, "fp16", tmp_path)
    assert name == TENSORRT and options["trt_fp16_enable"] is True
    assert options["trt_engine_cache_enable"] is True and options["trt_engine_cache_path"] == str(tmp_path)
    assert provider_options(TENSORRT, "fp32", None)[1] == {"trt_fp16_enable": False}
    assert provider_options(CUDA, "fp32", None)[0] == CUDA and provider_options(CPU, "fp32", None) == CPU


def test_silent_onnxruntime_fallback_is_an_error_for_cuda_and_a_warning_for_auto() -> None:
    with pytest.raises(ProviderError, match="could not use it"):
        check_active("cuda", [CUDA, CPU], [CPU])
    with pytest.warns(RuntimeWarning, match="running on CPUExecutionProvider"):
        check_active("auto", [CUDA, CPU], [CPU])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_active("auto", [CPU], [CPU])
        check_active("cuda", [CUDA, CPU], [CUDA, CPU])
        check_active("tensorrt", [TENSORRT, CUDA, CPU], [TENSORRT, CUDA, CPU])
    with pytest.raises(ProviderError, match="TensorrtExecutionProvider is in this onnxruntime build"):
        check_active("tensorrt", [TENSORRT, CUDA, CPU], [CUDA, CPU])  # ORT replaced TensorRT silently


@pytest.mark.parametrize("threads", [0, -2, 1.5, True])
def test_bad_thread_counts(threads: object) -> None:
    with pytest.raises(ValueError, match="threads must be a positive whole number"):
        check_threads(threads)  # type: ignore[arg-type]


def test_real_session_on_this_machine(tiny_bundle: Path) -> None:
    import onnxruntime

    embedder = Embedder.load(tiny_bundle, backend="onnxruntime", provider="auto", threads=2)
    assert embedder.backend.info.threads == 2
    if CUDA not in onnxruntime.get_available_providers():
        assert embedder.backend.info.device == CPU
        with pytest.raises(ProviderError, match="not available"):
            Embedder.load(tiny_bundle, provider="cuda")


def test_engine_runs_without_torch_or_transformers(tiny_bundle: Path) -> None:
    script = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers", "optimum", "sentence_transformers"):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
from bertonnx import Embedder
e = Embedder.load({str(tiny_bundle)!r}, provider="cpu")
print(e.static(["king"]).shape, len(e.contextual(["the king is wise."])[0].words), e.sentences(["a"]).shape)
assert not any(m.split(".")[0] in ("torch", "transformers") for m in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(1, 32) 5 (1, 32)"


@pytest.mark.parametrize("spin", [False, True])
def test_threads_spin_within_a_run_by_default_stop_when_it_returns_and_change_no_vector(
    tiny_bundle: Path, spin: bool
) -> None:
    default = Embedder.load(tiny_bundle, backend="onnxruntime", threads=2)
    chosen = Embedder.load(tiny_bundle, backend="onnxruntime", threads=2, spin=spin)
    assert default.backend.info.spin is True and chosen.backend.info.spin is spin
    for embedder in (default, chosen):  # spinning never outlives a call: the cores are free between calls
        options = embedder.backend._session.get_session_options()
        assert options.get_session_config_entry("session.force_spinning_stop") == "1"
    texts = ["the queen of the kingdom", "apple music"]
    np.testing.assert_array_equal(chosen.sentences(texts), default.sentences(texts))


@pytest.mark.parametrize(
    "provider,threads,error,message",
    [
        ("tpu", None, OptionError, "unknown provider 'tpu'; expected one of auto, cpu, cuda, tensorrt"),
        ("CPUExecutionProvider", None, OptionError, "unknown provider 'CPUExecutionProvider'"),
        ("cpu", 0, ValueError, "threads must be a positive whole number, got 0"),
        ("cpu", -4, ValueError, "threads must be a positive whole number, got -4"),
    ],
)
def test_impossible_session_requests_fail_at_load(tiny_bundle: Path, provider: str, threads: int | None,
                                                  error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        Embedder.load(tiny_bundle, provider=provider, threads=threads)


def test_cuda_build_without_a_gpu(tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """onnxruntime-gpu on a machine without a GPU: ONNX Runtime quietly runs on the CPU. Asked for
    "cuda", that is an error (API and CLI); asked for "auto", a warning and the CPU."""
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(ProviderError, match="could not use it"):
        Embedder.load(tiny_bundle, provider="cuda")
    with pytest.warns(RuntimeWarning, match="running on CPUExecutionProvider"):
        assert Embedder.load(tiny_bundle, provider="auto").backend.info.device == "CPUExecutionProvider"
    words = tmp_path / "words.txt"
    words.write_text("king\n")
    one_line_error(run("embed", tiny_bundle, "--static", "--provider", "cuda", "-i", words), "could not use it")
