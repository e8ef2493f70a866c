"""Prometheus text-format metrics, written by hand to keep the serve extra small.

Every update happens on the server's event loop (middleware and the batcher's
collector task), so the counters need no locks.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
TOKEN_BUCKETS = (16, 64, 256, 1024, 4096, 16384, 65536)

Labels = tuple[tuple[str, str], ...]


def _labels(labels: Labels, extra: str = "") -> str:
    parts = [f'{name}="{_escape(value)}"' for name, value in labels]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


@dataclass
class Counter:
    """A monotonically increasing count per label set."""

    name: str
    help: str
    values: dict[Labels, float] = field(default_factory=dict)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        self.values[key] = self.values.get(key, 0.0) + amount

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        lines += [f"{self.name}{_labels(key)} {_number(value)}" for key, value in sorted(self.values.items())]
        return lines


@dataclass
class Gauge:
    """A value read when scraped, so it is never stale."""

    name: str
    help: str
    read: Callable[[], float]

    def render(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} gauge", f"{self.name} {_number(self.read())}"]


@dataclass
class _Series:
    counts: list[int]  # per bucket, not cumulative; the last is +Inf
    total: float = 0.0


@dataclass
class Histogram:
    """Observations counted into fixed buckets, per label set."""

    name: str
    help: str
    buckets: Sequence[float]
    labelled: bool = False  # unlabelled histograms are reported, at zero, before the first observation
    series: dict[Labels, _Series] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.labelled:
            self.series[()] = self._empty()

    def _empty(self) -> _Series:
        return _Series([0] * (len(self.buckets) + 1))

    def observe(self, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        series = self.series.setdefault(key, self._empty())
        series.counts[bisect.bisect_left(self.buckets, value)] += 1
        series.total += value

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for key, series in sorted(self.series.items()):
            cumulative = 0
            for bound, count in zip([*map(_number, self.buckets), "+Inf"], series.counts):
                cumulative += count
                le = f'le="{bound}"'
                lines.append(f"{self.name}_bucket{_labels(key, le)} {cumulative}")
            lines.append(f"{self.name}_sum{_labels(key)} {_number(series.total)}")
            lines.append(f"{self.name}_count{_labels(key)} {cumulative}")
        return lines


class ServeMetrics:
    """What /metrics reports: traffic, errors, latency, batching and the queue."""

    def __init__(self, queue_requests: Callable[[], float], queue_tokens: Callable[[], float]) -> None:
        self.in_flight = 0  # embedding requests received and not yet answered
        self.requests = Counter("bertonnx_requests_total", "HTTP requests answered, by endpoint.")
        self.errors = Counter("bertonnx_errors_total", "HTTP error responses (4xx and 5xx), by endpoint and code.")
        self.latency = Histogram(
            "bertonnx_request_duration_seconds",
            "Time from request to full response, by endpoint.",
            LATENCY_BUCKETS,
            labelled=True,
        )
        self.tokens = Counter(
            "bertonnx_tokens_total", "Tokens embedded (word pieces plus special tokens), by endpoint."
        )
        self.batch_requests = Histogram("bertonnx_batch_requests", "Requests merged into one batch.", SIZE_BUCKETS)
        self.batch_texts = Histogram("bertonnx_batch_texts", "Texts in one merged batch.", SIZE_BUCKETS)
        self.batch_tokens = Histogram("bertonnx_batch_tokens", "Tokens in one merged batch.", TOKEN_BUCKETS)
        self.batch_seconds = Histogram(
            "bertonnx_batch_duration_seconds", "Model time per merged batch.", LATENCY_BUCKETS
        )
        self._all = (
            self.requests,
            self.errors,
            self.latency,
            self.tokens,
            self.batch_requests,
            self.batch_texts,
            self.batch_tokens,
            self.batch_seconds,
            Gauge("bertonnx_requests_in_flight", "Embedding requests received and not yet answered.", self._in_flight),
            Gauge("bertonnx_queue_requests", "Requests waiting for the model.", queue_requests),
            Gauge("bertonnx_queue_tokens", "Tokens waiting for the model.", queue_tokens),
        )

    def _in_flight(self) -> float:
        return self.in_flight

    def observe_batch(self, requests: int, texts: int, tokens: int, seconds: float) -> None:
        self.batch_requests.observe(requests)
        self.batch_texts.observe(texts)
        self.batch_tokens.observe(tokens)
        self.batch_seconds.observe(seconds)

    def render(self) -> str:
        return "\n".join(line for metric in self._all for line in metric.render()) + "\n"
