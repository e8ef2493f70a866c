"""Silence the exporters' own chatter, which a user cannot act on.

torch.onnx, optimum and onnxruntime's optimiser and quantiser warn about their
internals on every export: a TracerWarning from transformers' attention-mask
code, DeprecationWarnings about the TorchScript exporter, "consider running
pre-processing before quantization", and an ERROR record "there is no gpu" for
an fp16 graph, which is then optimised on the CPU as it should be. None says
anything about the bundle: validation against PyTorch does, and a real failure
raises. They stay visible with BERTONNX_DEBUG=1.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def quiet_exporters() -> Iterator[None]:
    """Inside: Python warnings ignored and log records up to ERROR dropped, unless BERTONNX_DEBUG is set."""
    if os.environ.get("BERTONNX_DEBUG"):
        yield
        return
    disabled = logging.root.manager.disable
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(max(disabled, logging.ERROR))
        try:
            yield
        finally:
            logging.disable(disabled)
