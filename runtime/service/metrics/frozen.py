"""One scrape's numbers, copied on the event loop in well under a millisecond, so that the
series can be built and formatted in a worker thread while the engine goes on changing the
live counters (formatting a few thousand series costs milliseconds of CPU)."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from runtime.abc import SourceMetric
from runtime.engine.limits import Limits
from runtime.service.context import ServiceContext
from runtime.service.metrics.lag import LagProbe
from runtime.service.metrics.recorder import BusRecorder, Histogram
from runtime.store.gauges import StoreGauges

log = logging.getLogger("sluiceway.runtime.metrics")

TRIGGER_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
TRIGGER_LABELS = frozenset({"flow", "state"})  # bounded: see runtime.abc.SourceMetric


@dataclass(frozen=True, slots=True)
class PoolState:
    """One pool's slots (``global`` for the global limit)."""

    name: str
    total: int
    used: int
    waiting: int


@dataclass(frozen=True, slots=True)
class TriggerSample:
    """A trigger source's sample, checked, with the ``source`` label added."""

    name: str
    help: str
    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True, slots=True)
class Frozen:
    """Everything one scrape serves, copied: nothing here changes after :meth:`freeze`."""

    flows: tuple[str, ...]
    runs_ended: dict[tuple[str, str], int]
    attempts: dict[tuple[str, str], int]
    checks_failed: dict[tuple[str, str], int]
    task_durations: dict[str, Histogram]
    run_durations: dict[str, Histogram]
    lateness: dict[str, Histogram]
    running: dict[str, int]
    pools: tuple[PoolState, ...]
    triggers: tuple[TriggerSample, ...]
    store: StoreGauges | None
    ended: list[tuple[str, str, int]] | None
    writable: bool
    lag: Histogram
    lag_last: float


def _copies(table: Mapping[str, Histogram]) -> dict[str, Histogram]:
    return {key: histogram.copy() for key, histogram in table.items()}


def pool_states(limits: Limits) -> tuple[PoolState, ...]:
    """The global limit (as pool ``global``) and every named pool, by name."""
    slots = [("global", limits.global_slots), *sorted(limits.pools.items())]
    return tuple(PoolState(name, s.total, s.used, s.waiting()) for name, s in slots)


class Freezer:
    """Copies the live numbers of the service *ctx* (on the event loop)."""

    def __init__(self, ctx: ServiceContext, recorder: BusRecorder, lag: LagProbe) -> None:
        self.ctx = ctx
        self.recorder = recorder
        self.lag = lag
        self._dropped: set[str] = set()  # trigger metrics already reported as refused

    def freeze(self, store: StoreGauges | None, ended: list[tuple[str, str, int]] | None) -> Frozen:
        """This instant's numbers, with the store's counts of the latest refreshes."""
        r = self.recorder
        return Frozen(
            flows=tuple(sorted(self.ctx.flows)),
            runs_ended=dict(r.runs_ended),
            attempts=dict(r.attempts),
            checks_failed=dict(r.checks_failed),
            task_durations=_copies(r.task_durations),
            run_durations=_copies(r.run_durations),
            lateness=_copies(r.lateness),
            running=dict(r.running_tasks()),
            pools=pool_states(self.ctx.runner.limits),
            triggers=self._triggers(self.ctx.trigger_metrics()),
            store=store,
            ended=ended,
            writable=self.ctx.store.writer.failing is None,
            lag=self.lag.histogram.copy(),
            lag_last=self.lag.last,
        )

    def _triggers(self, found: Mapping[str, Sequence[SourceMetric]]) -> tuple[TriggerSample, ...]:
        out = []
        for source, samples in sorted(found.items()):
            for sample in samples:
                labels = self._checked(source, sample)
                if labels is not None:
                    out.append(TriggerSample(sample.name, sample.help, labels, float(sample.value)))
        return tuple(out)

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
