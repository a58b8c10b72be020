"""Prometheus metrics without a dependency: counters, gauges and histograms, text exposition."""
from __future__ import annotations

import bisect
import threading
from typing import Callable, Iterable

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
                     for k, v in sorted(labels.items()))
    return "{" + inner + "}"


class Metrics:
    """A registry of smg's metrics; ``render()`` gives the Prometheus text format."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[tuple[str, tuple], float] = {}
        self._histograms: dict[str, tuple[tuple[float, ...], list[int], list[float]]] = {}
        self._help: dict[str, tuple[str, str]] = {}
        self._gauges: list[Callable[[], Iterable[tuple[str, dict, float]]]] = []

    def describe(self, name: str, kind: str, text: str) -> None:
        self._help[name] = (kind, text)

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            self._counters[key] = self._counters.get(key, 0.0) + value

    def observe(self, name: str, value: float, buckets: tuple[float, ...] = _LATENCY_BUCKETS) -> None:
        with self._lock:
            found = self._histograms.get(name)
            if found is None:
                found = self._histograms[name] = (buckets, [0] * (len(buckets) + 1), [0.0])
            found[1][bisect.bisect_left(found[0], value)] += 1
            found[2][0] += value

    def gauge_source(self, source: Callable[[], Iterable[tuple[str, dict, float]]]) -> None:
        """``source()`` yields ``(name, labels, value)`` at render time (worker health, cache sizes)."""
        self._gauges.append(source)

    def counter(self, name: str, **labels: str) -> float:
        return self._counters.get((name, tuple(sorted(labels.items()))), 0.0)

    def render(self) -> str:
        lines: list[str] = []
        seen: set[str] = set()

        def header(name: str) -> None:
            if name not in seen and name in self._help:
                kind, text = self._help[name]
                lines.append(f"# HELP {name} {text}")
                lines.append(f"# TYPE {name} {kind}")
            seen.add(name)

        with self._lock:
            counters = sorted(self._counters.items())
            histograms = {k: (b, list(c), s[0]) for k, (b, c, s) in self._histograms.items()}
        for (name, labels), value in counters:
            header(name)
            lines.append(f"{name}{_labels(dict(labels))} {value:g}")
        for name, (buckets, counts, total) in sorted(histograms.items()):
            header(name)
            running = 0
            for bound, count in zip(buckets, counts):
                running += count
                lines.append(f'{name}_bucket{{le="{bound:g}"}} {running}')
            running += counts[-1]
            lines.append(f'{name}_bucket{{le="+Inf"}} {running}')
            lines.append(f"{name}_sum {total:g}")
            lines.append(f"{name}_count {running}")
        for source in self._gauges:
            for name, labels, value in source():
                header(name)
                lines.append(f"{name}{_labels(labels)} {value:g}")
        return "\n".join(lines) + "\n"
