"""smg's Prometheus metrics, on ``prometheus_client``: counters, histograms, and gauges read from
the gateway's state when they are shown.

One process (the default): ``render()`` shows this registry's metrics. Several (``smg serve
--workers N``, or an app's own worker processes): prometheus_client's multiprocess mode, chosen by
the ``PROMETHEUS_MULTIPROC_DIR`` variable before the first metric is made. Every process writes its
values to files in that directory, and ``render()`` in any process adds them up, so ``/metrics``
shows the whole server. Values read from the gateway's state (worker health, in-flight requests,
tokenizer cache counts) are published to those files by each process every
``PUBLISH_INTERVAL`` seconds, and by the process that renders just before it does.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
PUBLISH_INTERVAL = 1.0  # seconds; how stale another process's gauges may be in a multiprocess /metrics
GaugeSource = Callable[[], Iterable[tuple[str, dict, float]]]


def multiprocess_dir() -> str | None:
    """The directory prometheus_client's multiprocess mode writes to, when it is on."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")


class _Registered:
    """The metrics' own collector: leaves out the ``_created`` series prometheus_client adds to
    counters and histograms (one more series per counter, which no dashboard of smg's reads)."""

    def __init__(self, metrics: "Metrics") -> None:
        self.metrics = metrics

    def collect(self):
        for metric in list(self.metrics._made.values()):
            for family in metric.collect():
                family.samples = [s for s in family.samples if not s.name.endswith("_created")]
                yield family
        yield from self.metrics._source_families()


class Metrics:
    """A registry of smg's metrics; ``render()`` gives the Prometheus text format."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._help: dict[str, tuple[str, str, str]] = {}  # name -> (kind, text, multiprocess mode)
        self._made: dict[str, Counter | Histogram | Gauge] = {}
        self._children: dict[tuple, object] = {}  # (name, labels) -> the labelled child
        self._sources: list[GaugeSource] = []
        self._published: dict[tuple, float] = {}  # what this process last published of a counter source
        self.multiprocess = multiprocess_dir() is not None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Registered(self))

    def describe(self, name: str, kind: str, text: str, multiprocess_mode: str = "livesum") -> None:
        """``kind``: counter, gauge or histogram. ``multiprocess_mode``: how a gauge read from the
        gateway's state adds up over processes (prometheus_client's modes: livesum, livemin, ...)."""
        self._help[name] = (kind, text, multiprocess_mode)

    def _child(self, name: str, kind: str, labels: dict, **options):
        key = (name, *labels.items())
        child = self._children.get(key)
        if child is None:
            with self._lock:
                metric = self._made.get(name)
                if metric is None:
                    text = self._help.get(name, (kind, name, "livesum"))[1]
                    made = {"counter": Counter, "histogram": Histogram, "gauge": Gauge}[kind]
                    metric = self._made[name] = made(name, text, labelnames=sorted(labels), registry=None, **options)
                child = metric.labels(**labels) if labels else metric
                self._children[key] = child
        return child

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        self._child(name, "counter", labels).inc(value)

    def observe(self, name: str, value: float, buckets: tuple[float, ...] = _LATENCY_BUCKETS, **labels: str) -> None:
        self._child(name, "histogram", labels, buckets=buckets).observe(value)

    def gauge_source(self, source: GaugeSource) -> None:
        """``source()`` yields ``(name, labels, value)`` from the gateway's state (worker health,
        cache counts); a source's labels are the same set for every value of a name."""
        self._sources.append(source)

    def counter(self, name: str, **labels: str) -> float:
        """This process's count over the series whose labels include ``labels`` (0 before the first)."""
        sample = name if name.endswith("_total") else name + "_total"
        return sum(s.value for family in self.registry.collect() for s in family.samples
                   if s.name == sample and labels.items() <= s.labels.items())

    def _source_families(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {}
        for source in self._sources:
            for name, labels, value in source():
                family = families.get(name)
                if family is None:
                    kind, text, _ = self._help.get(name, ("gauge", name, "livesum"))
                    family = families[name] = (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(
                        name, text, labels=sorted(labels))
                family.add_metric([str(labels[k]) for k in sorted(labels)], value)
        return families.values()

    def publish(self) -> None:
        """Write the sources' values to this process's multiprocess files (counters by what they
        grew since the last publish, gauges as they are now); nothing in one process."""
        if not self.multiprocess:
            return
        for source in self._sources:
            for name, labels, value in source():
                kind, _, mode = self._help.get(name, ("gauge", name, "livesum"))
                if kind == "counter":
                    key = (name, *sorted(labels.items()))
                    grown = value - self._published.get(key, 0.0)
                    if grown > 0:
                        self._child(name, "counter", labels).inc(grown)
                        self._published[key] = value
                else:
                    self._child(name, "gauge", labels, multiprocess_mode=mode).set(value)

    def render(self) -> str:
        if not self.multiprocess:
            return generate_latest(self.registry).decode()
        self.publish()
        combined = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(combined)
        return generate_latest(combined).decode()
