"""Alerts in the service: the routing (routes + notifier instances), and the hub that turns
bus events and the service's own events into outbox rows and wakes the sender.

The hub subscribes to the event bus. The engine records a state change (``put_run``,
``put_task``) and publishes its event synchronously; the hub queues the outbox row without
awaiting anything in between, so the row is committed in the same transaction as the state
change (runtime/store/outbox.py). The alerts queued until the writer takes its next batch
go as one op of that batch (``put_op_from``, built when the batch is taken, with the
rows), not as an op each.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from runtime import registry
from runtime.abc import Notifier
from runtime.alerting import AlertRoute, parse_destination
from runtime.clock import Clock
from runtime.config import Config
from runtime.define.flow import Flow
from runtime.engine.events import Event, EventBus, RunEnded
from runtime.errors import ConfigError, StoreError
from runtime.redact import register
from runtime.service.alert_events import alert_name, from_event, make_alert
from runtime.service.delivery import Sender
from runtime.states import RunState
from runtime.store import Store, outbox
from runtime.store.batch import Op
from runtime.store.outbox import Queued

log = logging.getLogger("sluiceway.runtime.service.alerts")

__all__ = ["AlertHub", "Routing", "build_routing", "make_notifier"]


def make_notifier(destination: str, options: Mapping[str, Any], where: str) -> Notifier:
    """The notifier of *destination* (``"<plugin>:<name>"``) made from its *options*; its
    secrets are registered for masking.

    :raises ConfigError: naming *where*, when the plugin is unknown or refuses the options
    """
    plugin, name = parse_destination(destination)
    try:
        cls = registry.notifier(plugin)
    except registry.PluginError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    problems = cls.check_options(options)
    if problems:
        raise ConfigError(f"{where}: " + "; ".join(problems))
    try:
        made = cls(name, options)
        register(made.secrets())
    except Exception as exc:
        raise ConfigError(
            f"{where}: notifier {plugin!r} fails: {type(exc).__name__}: {exc}"
        ) from exc
    return made


@dataclass(frozen=True, slots=True)
class Routing:
    """The config's routes, and one notifier instance per configured destination."""

    routes: tuple[AlertRoute, ...] = ()
    notifiers: Mapping[str, Notifier] = field(default_factory=dict)
    wanted: frozenset[str] = field(init=False)  # every event name a config route takes
    recovers: bool = field(init=False)  # a config route sends recoveries
    # targets by (event, flow name) for flows with no routes of their own: an alert costs a
    # dict lookup, not a glob match per route (the routing is replaced, never changed)
    _found: dict[tuple[str, str | None], list[Queued]] = field(
        init=False, default_factory=dict, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "wanted", frozenset(n for r in self.routes for n in r.on))
        object.__setattr__(self, "recovers", any(r.recovers for r in self.routes))

    def routes_any(self, name: str, flow: Flow | None) -> bool:
        """Whether any route, the config's or *flow*'s own, takes event *name* (cheap)."""
        if name in self.wanted:
            return True
        return flow is not None and any(name in r.on for r in flow.alerts)

    def may_recover(self, flow: Flow | None) -> bool:
        """Whether a success of *flow* may owe a recovery to anyone."""
        return self.recovers or (flow is not None and any(r.recovers for r in flow.alerts))

    def targets(self, event: str, flow: Flow | str | None) -> list[Queued]:
        """Where an *event* of *flow* goes: the config's routes, then the flow's own; a
        destination once (its first route decides digest and recovery); do not change the
        list returned."""
        if isinstance(flow, Flow) and flow.alerts:
            return self._targets(event, flow)
        key = (event, _name(flow))
        found = self._found.get(key)
        if found is None:
            found = self._found[key] = self._targets(event, key[1])
        return found

    def _targets(self, event: str, flow: Flow | str | None) -> list[Queued]:
        found: dict[str, Queued] = {}
        for route in self._routes(flow):
            if route.matches(event, _name(flow)):
                for dest in route.to:
                    if dest in self.notifiers:
                        found.setdefault(dest, Queued(dest, route.digest, route.recovers))
        return list(found.values())

    def recovering(self, flow: Flow | str) -> list[str]:
        """Destinations that get a recovery when *flow* succeeds after alerts."""
        found: dict[str, None] = {}
        for route in self._routes(flow):
            if route.recovers and route.covers(_name(flow)):
                found.update(dict.fromkeys(d for d in route.to if d in self.notifiers))
        return list(found)

    def _routes(self, flow: Flow | str | None) -> Iterable[AlertRoute]:
        yield from self.routes
        if isinstance(flow, Flow):
            yield from flow.alerts

    def flow_problems(self, flows: Iterable[Flow]) -> list[str]:
        """Flow routes naming a destination the config has no table for."""
        return [
            f"{route.where}: alerts: unknown destination {dest!r} (configured: "
            f"{', '.join(sorted(self.notifiers)) or 'none'}); its alerts are not sent"
            for flow in flows
            for route in flow.alerts
            for dest in route.to
            if dest not in self.notifiers
        ]


def _name(flow: Flow | str | None) -> str | None:
    return flow.name if isinstance(flow, Flow) else flow


def build_routing(config: Config) -> Routing:
    """The routing of *config*: every destination's notifier made and checked.

    :raises ConfigError: naming the entry (``[notifiers.slack.ops]``) and the problem
    """
    if config.notifier_problems:
        raise ConfigError(config.notifier_problems[0])
    notifiers = {
        dest: make_notifier(dest, options, f"{config.source}: [notifiers.{dest.replace(':', '.')}]")
        for dest, options in config.notifiers.items()
    }
    return Routing(config.alerts, notifiers)


class AlertHub:
    """Turns events into outbox rows (same transaction) and runs the :class:`Sender`.

    :param flows: the flows of the latest reload (their own ``alerts=`` routes count)
    """

    def __init__(
        self,
        store: Store,
        clock: Clock,
        config: Config,
        routing: Routing,
        flows: Callable[[], Mapping[str, Flow]],
    ) -> None:
        self.store = store
        self.clock = clock
        self.routing = routing
        self.flows = flows
        self.public_url = config.api.public_url
        self._bus: EventBus | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._group: list[Op] | None = None  # what goes in the writer's next batch
        self.sender = Sender(
            store,
            clock,
            lambda: self.routing.notifiers,
            retries=config.alert_retries,
            timeout=config.alert_timeout,
            settle=config.flush_interval,
        )

    def attach(self, bus: EventBus) -> None:
        """Listen to *bus* while any destination is configured: with no listener the engine
        does not even build per-task events."""
        self._bus = bus
        self._listen()

    def detach(self) -> None:
        """Stop listening to the bus."""
        if self._unsubscribe is not None:
            self._unsubscribe()
        self._bus = self._unsubscribe = None

    def _listen(self) -> None:
        wanted = bool(self.routing.notifiers) and self._bus is not None
        if wanted and self._unsubscribe is None and self._bus is not None:
            self._unsubscribe = self._bus.subscribe(self.on_event)
        elif not wanted and self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def on_event(self, event: Event) -> None:
        """The bus subscriber: must not block, and must not await (same transaction)."""
        name = alert_name(event)
        ok = event if isinstance(event, RunEnded) and event.state is RunState.SUCCEEDED else None
        if name is None and ok is None:  # a task started or succeeded: most events
            return
        routing = self.routing
        loaded = self.flows().get(event.flow)
        flow = event.flow if loaded is None else loaded
        if name is not None and routing.routes_any(name, loaded):
            alert = from_event(event, self.public_url)
            if alert is not None:
                self._queue(alert, flow)
        if ok is not None and routing.may_recover(loaded):
            destinations = routing.recovering(flow)
            if destinations:
                self._recover(ok, destinations)

    def service_event(
        self,
        name: str,
        summary: str,
        *,
        flow: str | None = None,
        error: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """An event of the service itself (started, stopping, a trigger error)."""
        alert = make_alert(name, summary, self.clock.now(), flow=flow, error=error, details=details)
        self._queue(alert, self.flows().get(flow) if flow else None)

    def reload(self, config: Config) -> bool:
        """Use *config*'s routes from now on; on a bad entry keep the last good routing and
        log the error naming it. True when it was applied."""
        try:
            routing = build_routing(config)
        except ConfigError as exc:
            log.error("alerts: %s (the last good routing stays)", exc)
            return False
        self.routing = routing
        self._listen()
        for problem in routing.flow_problems(self.flows().values()):
            log.error("%s", problem)
        log.info(
            "alerts: %d route(s), %d destination(s)", len(routing.routes), len(routing.notifiers)
        )
        return True

    def _queue(self, alert: dict[str, Any], flow: Flow | str | None) -> None:
        to = self.routing.targets(alert["event"], flow)
        if not to:
            return
        now = self.clock.now()
        try:
            self._put(lambda db: outbox.queue_alert(db, alert, to, now))
        except StoreError:  # the service is past its end: nothing can be recorded any more
            log.warning("alert %s: %s not queued: the store is closed", alert["event"], to)
            return
        self.sender.wake()

    def _put(self, op: Op) -> None:
        """Queue *op* to run in the batch of the state change queued before it. Every alert
        queued until that batch is taken goes in one op of the writer (one savepoint, no
        waiter each); one queued after it goes with the next batch, as its state change.

        :raises StoreError: when the store is closed
        """
        if self._group is None:
            self.store.writer.put_op_from(self._seal)
            self._group = []
        self._group.append(op)

    def _seal(self) -> Op:
        """The op of the batch being taken (called by the writer on the loop thread)."""
        group, self._group = self._group or [], None
        return partial(outbox.queue_all, ops=group)

    def _recover(self, event: RunEnded, destinations: list[str]) -> None:
        alert = make_alert(
            "run.recovered",
            f"{event.flow} run {event.run_id} succeeded: recovered",
            event.ts,
            kind="recovery",
            flow=event.flow,
            run_id=event.run_id,
            state="succeeded",
            public_url=self.public_url,
        )
        now = self.clock.now()
        self._put(lambda db: outbox.recover(db, alert, destinations, now))
        self.sender.wake()
