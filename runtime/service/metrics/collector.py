"""The series of ``/metrics``, built from one scrape's :class:`Frozen` numbers: what the
recorder counted, the store's counts of the last refresh, the engine's limits and the trigger
sources' own samples.

Every name starts with ``sluiceway_``; labels are flows, states, pools, destinations, trigger
sources and check severities: sets that grow with the configuration, never with the history
(no run id, no path).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from runtime.service.metrics.frozen import Frozen, PoolState, TriggerSample
from runtime.service.metrics.recorder import Histogram
from runtime.states import RunState
from runtime.store.gauges import StoreGauges

P = "sluiceway_"
END_STATES = (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED)
LIVE_STATES = (RunState.QUEUED, RunState.RUNNING)


class SnapshotCollector(Collector):
    """Yields the series of the :class:`Frozen` it was last given (none before): safe to
    call from a worker thread while the live counters change."""

    def __init__(self) -> None:
        self.frozen: Frozen | None = None

    def collect(self) -> Iterator[Metric]:
        frozen = self.frozen
        if frozen is None:
            return
        yield _gauge("flows_loaded", "flows loaded and able to run", [((), len(frozen.flows))])
        yield from bus_families(frozen)
        if frozen.store is not None:
            yield from store_families(frozen.store, frozen.ended or [], frozen.flows)
        yield from pool_families(frozen.pools)
        yield from trigger_families(frozen.triggers)
        yield from service_families(frozen)


def service_families(frozen: Frozen) -> Iterator[Metric]:
    """The store's health and the event loop's lag."""
    yield _gauge(
        "store_writable",
        "1 while the store commits, 0 while its batches fail (they are retried)",
        [((), 1 if frozen.writable else 0)],
    )
    yield _histogram(
        "event_loop_lag_seconds",
        "how late the event loop woke a 0.5 s sleep: every run and timer was as late",
        (),
        [((), frozen.lag)],
    )
    yield _gauge(
        "event_loop_lag_last_seconds", "the latest event-loop lag sample", [((), frozen.lag_last)]
    )


def trigger_families(samples: Sequence[TriggerSample]) -> Iterator[Metric]:
    """``sluiceway_trigger_<name>``: the trigger sources' own samples, one family per name."""
    families: dict[str, GaugeMetricFamily] = {}
    for sample in samples:
        family = families.get(sample.name)
        if family is None:
            name = f"{P}trigger_{sample.name}"
            family = families[sample.name] = GaugeMetricFamily(name, sample.help, labels=[])
        # samples of one family may carry different labels: appended as they are
        family.samples.append(Sample(family.name, dict(sample.labels), sample.value))
    yield from families.values()


def bus_families(frozen: Frozen) -> Iterator[Metric]:
    """Run ends, attempts, checks, durations, lateness and running tasks."""
    ended = dict(frozen.runs_ended)
    for flow in frozen.flows:  # every loaded flow's counters exist from the start: rate() works
        for state in END_STATES:
            ended.setdefault((flow, str(state)), 0)
    yield _counter("runs_ended", "runs that ended, by end state", ("flow", "state"), ended)
    yield _counter(
        "task_attempts",
        "task attempts that ended, by state (an attempt followed by a retry ended failed)",
        ("flow", "state"),
        frozen.attempts,
    )
    yield _counter(
        "check_failures",
        "data-quality checks that failed, by severity",
        ("flow", "severity"),
        frozen.checks_failed,
    )
    yield _histogram(
        "task_duration_seconds",
        "a task's time from its first attempt's start to its end (retries included)",
        ("flow",),
        [((flow,), h) for flow, h in sorted(frozen.task_durations.items())],
    )
    yield _histogram(
        "run_duration_seconds",
        "a run's time from its start to its end",
        ("flow",),
        [((flow,), h) for flow, h in sorted(frozen.run_durations.items())],
    )
    yield _histogram(
        "schedule_lateness_seconds",
        "how long after its scheduled instant a scheduled run started",
        ("flow",),
        [((flow,), h) for flow, h in sorted(frozen.lateness.items())],
    )
    running = frozen.running
    yield _gauge(
        "tasks_running",
        "tasks (and mapped instances) with an attempt running in this service",
        [((flow,), running.get(flow, 0)) for flow in sorted({*frozen.flows, *running})],
        ("flow",),
    )


def store_families(
    snapshot: StoreGauges, ended: Sequence[tuple[str, str, int]], flows: Sequence[str]
) -> Iterator[Metric]:
    """Runs by state, the queue, the alert outbox and file claims, as the store has them;
    a loaded flow with no run queued or running shows 0 (a graph drops to 0, not to a gap)."""
    live = {(flow, str(state)): 0 for flow in flows for state in LIVE_STATES}
    live.update({(flow, state): n for flow, state, n in snapshot.runs})
    yield _gauge(
        "runs",
        "runs in the history by state (queued and running as of the scrape, ended ones as "
        "of the last minute)",
        [*sorted(live.items()), *(((flow, state), n) for flow, state, n in ended)],
        ("flow", "state"),
    )
    depth = dict.fromkeys(flows, 0)
    depth.update({flow: n for flow, n, _ in snapshot.queued})
    yield _gauge(
        "queue_depth",
        "queued runs waiting to start",
        [((flow,), n) for flow, n in sorted(depth.items())],
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


def pool_families(pools: Sequence[PoolState]) -> Iterator[Metric]:
    """Slots of every pool and of the global limit (pool ``global``)."""
    yield _gauge("pool_slots", "slots of a pool", [((p.name,), p.total) for p in pools], ("pool",))
    yield _gauge(
        "pool_slots_used",
        "slots of a pool taken by running attempts",
        [((p.name,), p.used) for p in pools],
        ("pool",),
    )
    yield _gauge(
        "pool_waiters",
        "ready tasks queued for a slot of the pool (or behind the global limit)",
        [((p.name,), p.waiting) for p in pools],
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
