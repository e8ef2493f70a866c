"""The stand-in for a backend where only the static table is wanted: nothing is opened, compiled or timed.

Static vectors are rows of the bundle's embedding table; they need no model. A job
of them (`bertonnx embed --static`) loads this instead of a backend: about 45 MB
and under a second on all-MiniLM-L6-v2, where OpenVINO bf16 takes ~340 MB, and a
first run on a new machine would also time `auto`'s candidates and measure their
fidelity, for vectors that never touch the graph.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from bertonnx.backends.base import BackendInfo, Feeds
from bertonnx.errors import OptionError

NAME = "none"


class NoModel:
    """A backend that runs nothing: any model call is an error that says how to load one."""

    def __init__(self) -> None:
        self.info = BackendInfo(backend=NAME, device="none", precision="none", threads=0, inputs=(), outputs=(),
                                details={"static": "the embedding table only: no model was loaded"})

    def run(self, output: str, feeds: Feeds) -> NDArray[np.float32]:
        raise OptionError("this embedder holds the static table only (Embedder.table_only); contextual and sentence "
                          "vectors need a model: load the bundle with Embedder.load")

    def run_many(self, output: str, batches: Sequence[Feeds]) -> list[NDArray[np.float32]]:
        return [self.run(output, feeds) for feeds in batches]
