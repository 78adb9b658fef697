"""The series of ``/metrics``, built at scrape time from what the recorder counted, the store's
counts of the last refresh, the engine's limits and the trigger sources' own numbers.

Every name starts with ``sluiceway_``; labels are flows, states, pools, destinations, trigger
sources and check severities: sets that grow with the configuration, never with the history
(no run id, no path).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from runtime.abc import SourceMetric
from runtime.engine.limits import Limits, Slots
from runtime.service.context import ServiceContext
from runtime.service.metrics.lag import LagProbe
from runtime.service.metrics.recorder import BusRecorder, Histogram
from runtime.states import RunState
from runtime.store.gauges import StoreGauges

log = logging.getLogger("sluiceway.runtime.metrics")

P = "sluiceway_"
TRIGGER_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
TRIGGER_LABELS = frozenset({"flow", "state"})  # bounded: see runtime.abc.SourceMetric
END_STATES = (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED)


class ServiceCollector(Collector):
    """Yields every series of the service (the process metrics are a collector of their own).

    :param snapshot: the store's counts of the latest refresh (``None`` before the first)
    """

    def __init__(
        self,
        ctx: ServiceContext,
        recorder: BusRecorder,
        lag: LagProbe,
        snapshot: Callable[[], StoreGauges | None],
    ) -> None:
        self.ctx = ctx
        self.recorder = recorder
        self.lag = lag
        self.snapshot = snapshot
        self._dropped: set[str] = set()  # trigger metrics already reported as refused

    def collect(self) -> Iterator[Metric]:
        flows = sorted(self.ctx.flows)
        yield _gauge("flows_loaded", "flows loaded and able to run", [((), len(flows))])
        yield from bus_families(self.recorder, flows)
        snapshot = self.snapshot()
        if snapshot is not None:
            yield from store_families(snapshot)
        yield from pool_families(self.ctx.runner.limits)
        yield from self._trigger_families(self.ctx.trigger_metrics())
        yield from self._service_families()

    def _service_families(self) -> Iterator[Metric]:
        writer = self.ctx.store.writer
        yield _gauge(
            "store_writable",
            "1 while the store commits, 0 while its batches fail (they are retried)",
            [((), 0 if writer.failing is not None else 1)],
        )
        yield _histogram(
            "event_loop_lag_seconds",
            "how late the event loop woke a 0.5 s sleep: every run and timer was as late",
            (),
            [((), self.lag.histogram)],
        )
        yield _gauge(
            "event_loop_lag_last_seconds",
            "the latest event-loop lag sample",
            [((), self.lag.last)],
        )

    def _trigger_families(self, found: Mapping[str, Sequence[SourceMetric]]) -> Iterator[Metric]:
        families: dict[str, GaugeMetricFamily] = {}
        for source, samples in sorted(found.items()):
            for sample in samples:
                labels = self._checked(source, sample)
                if labels is None:
                    continue
                family = families.get(sample.name)
                if family is None:
                    family = families[sample.name] = GaugeMetricFamily(
                        f"{P}trigger_{sample.name}", sample.help, labels=[]
                    )
                # samples of one family may carry different labels: appended as they are
                family.samples.append(Sample(family.name, labels, float(sample.value)))
        yield from families.values()

    def _checked(self, source: str, sample: SourceMetric) -> dict[str, str] | None:
        """The sample's labels with ``source`` added, or ``None`` (reported once) when its
        name or a label name is not allowed."""
        bad = sorted(set(sample.labels) - TRIGGER_LABELS)
        if TRIGGER_NAME.match(sample.name) and not bad:
            return {"source": source, **{k: str(v) for k, v in sample.labels.items()}}
        key = f"{source}:{sample.name}"
        if key not in self._dropped:
            self._dropped.add(key)
            why = f"label(s) {', '.join(bad)} not allowed" if bad else "not a snake_case name"
            log.warning(
                "trigger source %r: metric %r left out of /metrics: %s (labels: flow, state)",
                source,
                sample.name,
                why,
            )
        return None


def bus_families(recorder: BusRecorder, flows: Sequence[str]) -> Iterator[Metric]:
    """Run ends, attempts, checks, durations, lateness and running tasks."""
    ended = dict(recorder.runs_ended)
    for flow in flows:  # every loaded flow's counters exist from the start: rate() works
        for state in END_STATES:
            ended.setdefault((flow, str(state)), 0)
    yield _counter("runs_ended", "runs that ended, by end state", ("flow", "state"), ended)
    yield _counter(
        "task_attempts",
        "task attempts that ended, by state (an attempt followed by a retry ended failed)",
        ("flow", "state"),
        recorder.attempts,
    )
    yield _counter(
        "check_failures",
        "data-quality checks that failed, by severity",
        ("flow", "severity"),
        recorder.checks_failed,
    )
    yield _histogram(
        "task_duration_seconds",
        "a task's time from its first attempt's start to its end (retries included)",
        ("flow",),
        [((flow,), h) for flow, h in sorted(recorder.task_durations.items())],
    )
    yield _histogram(
        "run_duration_seconds",
        "a run's time from its start to its end",
        ("flow",),
        [((flow,), h) for flow, h in sorted(recorder.run_durations.items())],
    )
    yield _histogram(
        "schedule_lateness_seconds",
        "how long after its scheduled instant a scheduled run started",
        ("flow",),
        [((flow,), h) for flow, h in sorted(recorder.lateness.items())],
    )
    running = recorder.running_tasks()
    yield _gauge(
        "tasks_running",
        "tasks (and mapped instances) with an attempt running in this service",
        [((flow,), running.get(flow, 0)) for flow in sorted({*flows, *running})],
        ("flow",),
    )


def store_families(snapshot: StoreGauges) -> Iterator[Metric]:
    """Runs by state, the queue, the alert outbox and file claims, as the store has them."""
    yield _gauge(
        "runs",
        "runs in the history, by state",
        [((flow, state), n) for flow, state, n in snapshot.runs],
        ("flow", "state"),
    )
    yield _gauge(
        "queue_depth",
        "queued runs waiting to start",
        [((flow,), n) for flow, n, _ in snapshot.queued],
        ("flow",),
    )
    yield _gauge(
        "queue_oldest_age_seconds",
        "how long the oldest queued run has waited",
        [((flow,), age) for flow, _, age in snapshot.queued],
        ("flow",),
    )
    pending = [((d, s), n) for d, s, n in snapshot.outbox if s != "dead"]
    dead = [((d,), n) for d, s, n in snapshot.outbox if s == "dead"]
    yield _gauge(
        "alert_outbox",
        "alerts not delivered yet: pending (due or retrying), held (in a digest window)",
        pending,
        ("destination", "state"),
    )
    yield _gauge(
        "alert_dead_letters",
        "alerts given up on (sluiceway alerts resend sends them again)",
        dead,
        ("destination",),
    )
    yield _gauge(
        "file_claims_unsettled",
        "files claimed by a files() trigger whose run has not ended and been settled yet",
        [((flow,), n) for flow, n in snapshot.claims],
        ("flow",),
    )


def pool_families(limits: Limits) -> Iterator[Metric]:
    """Slots of every pool and of the global limit (pool ``global``)."""
    pools: list[tuple[str, Slots]] = [("global", limits.global_slots)]
    pools += sorted(limits.pools.items())
    yield _gauge("pool_slots", "slots of a pool", [((n,), s.total) for n, s in pools], ("pool",))
    yield _gauge(
        "pool_slots_used",
        "slots of a pool taken by running attempts",
        [((n,), s.used) for n, s in pools],
        ("pool",),
    )
    yield _gauge(
        "pool_waiters",
        "ready tasks queued for a slot of the pool",
        [((n,), s.waiting()) for n, s in pools],
        ("pool",),
    )


# --- families ---


def _gauge(
    name: str,
    doc: str,
    rows: Iterable[tuple[tuple[str, ...], float]],
    labels: Sequence[str] = (),
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(P + name, doc, labels=list(labels))
    for values, value in rows:
        family.add_metric(list(values), value)
    return family


def _counter(
    name: str, doc: str, labels: Sequence[str], counts: Mapping[tuple[str, str], int]
) -> CounterMetricFamily:
    family = CounterMetricFamily(P + name, doc, labels=list(labels))
    for values, value in sorted(counts.items()):
        family.add_metric(list(values), value)
    return family


def _histogram(
    name: str,
    doc: str,
    labels: Sequence[str],
    rows: Iterable[tuple[tuple[str, ...], Histogram]],
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(P + name, doc, labels=list(labels))
    for values, histogram in rows:
        buckets = [(_le(b), float(n)) for b, n in histogram.cumulative()]
        family.add_metric(list(values), buckets, histogram.sum)
    return family


def _le(bound: float) -> str:
    """A bucket bound as Prometheus writes it (``0.5``, ``1.0``, ``+Inf``)."""
    return "+Inf" if math.isinf(bound) else repr(float(bound))
