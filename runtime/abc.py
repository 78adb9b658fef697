"""The plugin contracts: what a trigger source, a notifier and an executor implement.

Plugins live outside ``runtime`` (the project's own in ``plugins/``, a third party's in its
own package) and are found through the entry-point group ``sluiceway.plugins``
(:mod:`runtime.registry`). ``runtime`` never imports them by name: it holds only these
contracts, and what a plugin is given is described here as protocols, so that this module
depends on nothing but the standard library.

A plugin class declares its ``plugin`` name (the name a flow file or the config uses, e.g.
``"files"``) and derives from one of :class:`TriggerSource`, :class:`Notifier` or
:class:`Executor`; the registry checks both when it loads the entry point.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Protocol

__all__ = [
    "AttemptCall",
    "Binding",
    "DeliveryError",
    "Executor",
    "Notifier",
    "Plugin",
    "SourceMetric",
    "TriggerHost",
    "TriggerSource",
]


class Plugin(ABC):
    """What every plugin class has: its name, and a check of its options."""

    plugin: ClassVar[str]
    """The name flows and the config use, e.g. ``"files"``; the entry point's name."""

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[str]:
        """What is wrong with *options* (one sentence each, naming the option); ``[]`` when
        nothing is. Called when a flow file is loaded, so mistakes are reported with the
        file and line of the trigger before anything runs."""
        return []


@dataclass(frozen=True, slots=True)
class Binding:
    """One trigger of one loaded flow, as a trigger source is given it.

    :ivar flow: the flow's name
    :ivar key: the trigger's stable key within the flow (``str(spec)``): cursors and claims
        are stored under it
    :ivar options: the trigger's options as written in the flow file
    :ivar base: the folder of the flow's file: relative paths in *options* are relative to it
    :ivar where: ``file:line`` of the trigger in the flow file, for messages
    """

    flow: str
    key: str
    options: Mapping[str, Any]
    base: Path
    where: str


class TriggerHost(Protocol):
    """What the service gives a trigger source.

    ``store`` is the service's :class:`runtime.store.Store`: a source writes only through it
    (the functions of ``runtime.store`` take it), so that a run request is committed, with
    whatever claim it needs, before the source counts its input as taken.
    """

    @property
    def store(self) -> Any: ...

    @property
    def bus(self) -> Any:
        """The service's :class:`runtime.engine.events.EventBus` (run and task events)."""
        ...

    @property
    def epoch(self) -> int:
        """This service process's epoch id."""
        ...

    def now(self) -> datetime:
        """The service clock's time (aware, UTC); tests inject the clock."""
        ...

    def flow(self, name: str) -> Any | None:
        """The loaded :class:`runtime.Flow` called *name*, or ``None``."""
        ...

    def wake_queue(self) -> None:
        """Runs were queued: start them now instead of at the queue's next poll."""
        ...

    def report(self, binding: Binding | None, problem: str) -> None:
        """Say that something is wrong with a trigger (a folder that vanished, a watch that
        failed). Logged as an error; the alerts issue routes these as trigger errors."""
        ...


@dataclass(frozen=True, slots=True)
class SourceMetric:
    """One gauge sample a trigger source reports for ``/metrics``.

    Served as ``sluiceway_trigger_<name>`` with the label ``source`` (the plugin's name)
    added; samples of several sources with the same *name* form one series family.

    :ivar name: lower-case snake case (``backlog``): what is measured, not who measures it
    :ivar help: one line saying what the value counts (the first sample's is served)
    :ivar value: the value now
    :ivar labels: at most ``flow`` and ``state``, each from a small fixed set (a flow name,
        a stage such as ``stabilizing``): never a path, an id or anything that grows with
        the input. Other label names are dropped (and logged once).
    """

    name: str
    help: str
    value: float
    labels: Mapping[str, str] = field(default_factory=dict)


class TriggerSource(Plugin):
    """Turns something outside (files landing, messages arriving) into queued runs.

    The service makes one instance per plugin name used by the loaded flows and runs
    :meth:`run` as a child of its task group for as long as it serves; :meth:`bind` tells it
    which triggers it serves, at start and after every reload. A source that raises is
    logged and started again after a pause: it never stops the service or other sources.
    """

    def __init__(self, host: TriggerHost) -> None:
        self.host = host

    @abstractmethod
    def bind(self, bindings: Sequence[Binding]) -> None:
        """Serve exactly *bindings* from now on (the triggers of this plugin in the flows
        just loaded); called before :meth:`run` and after every reload. Must not block."""

    @abstractmethod
    async def run(self, *, task_status: Any) -> None:
        """Watch until cancelled; call ``task_status.started()`` once watching (for a
        files source: after the start-up scan has queued what arrived while the service was
        down)."""

    def metrics(self) -> Sequence[SourceMetric]:
        """What the source knows now that an operator would graph or alert on: above all its
        *backlog*, the input it has seen but not yet turned into queued runs. Called on the
        event loop at every scrape of ``/metrics``: must not block or await, and should cost
        well under a millisecond. Default: nothing."""
        return []


class DeliveryError(Exception):
    """A notifier could not deliver an alert.

    The message must say what happened without the secret parts of the destination: the
    HTTP status and the host, never the URL (a Slack webhook URL is its own credential).

    :ivar status: the HTTP status the endpoint answered, if it answered
    :ivar retry_after: seconds the endpoint asked to wait (``Retry-After`` on 429/503)
    :ivar permanent: retrying cannot help (a 400 for a malformed message, a 404 for a
        deleted webhook): the outbox dead-letters it at once
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        permanent: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.permanent = permanent


class Notifier(Plugin):
    """Delivers one alert to one destination (a webhook, Slack, PagerDuty, email).

    Made from the destination's options (``[notifiers.<plugin>.<name>]`` in the config, with
    ``${VAR}`` already read from the environment); :meth:`send` is called by the alert
    outbox's sender, under its own timeout and retries. :meth:`secrets` names the option
    values that must never be shown (they are masked in logs, errors and outputs).

    An *alert* is JSON-ready data::

        {"id": "sluiceway-17",          # the same on every retry: an idempotency id
         "kind": "alert",               # or "digest", "recovery", "test"
         "event": "run.failed",         # run.started/succeeded/failed/cancelled,
                                        # task.failed/retrying/recovered, sla.missed,
                                        # quality.failed, service.started/stopping,
                                        # trigger.error
         "summary": "orders run 12 failed: failed tasks: load",   # one line for people
         "flow": "orders", "run_id": 12, "task": "load", "state": "failed",
         "error": "ConnectionError: ...",   # an excerpt, or None
         "logical_date": "2026-01-02T00:00:00Z", "ts": "2026-01-02T00:05:00Z",
         "url": "https://sluiceway.example/runs/12",   # when [api] public_url is set
         "details": {...},              # what the event adds (check, sla, deadline, ...)
         "items": [...],                # a digest: the alerts it groups (same fields)
         "resolves": ["run.failed"]}    # a recovery: the events it resolves

    Fields that do not apply are ``None`` (``items`` and ``resolves`` are ``[]``).
    """

    def __init__(self, name: str, options: Mapping[str, Any]) -> None:
        self.name = name
        self.options = options

    def secrets(self) -> list[str]:
        """The option values to mask (default: ``url``, ``secret``, ``password``,
        ``routing_key``, ``token`` when present)."""
        keys = ("url", "secret", "password", "routing_key", "token")
        return [str(self.options[k]) for k in keys if self.options.get(k)]

    @abstractmethod
    async def send(self, alert: Mapping[str, Any]) -> str:
        """Deliver *alert* and return a short description of the answer (``"200 OK"``).

        :raises DeliveryError: when it was not delivered (the outbox retries it, honouring
            ``retry_after``, unless ``permanent``); any other exception counts the same as a
            DeliveryError that is not permanent
        """


class AttemptCall:
    """One attempt of a task, as the engine hands it to an :class:`Executor`.

    :ivar run_id: the run's id
    :ivar flow: the flow's name
    :ivar task: the task's label (``load``, or ``load[3]`` for a mapped instance)
    :ivar attempt: the attempt's number, from 1
    :ivar key: unique to this attempt, over runs, restarts and services sharing a cluster:
        name the remote job after it (a Dask key), so that no two attempts are confused
    :ivar is_async: the body is an ``async def``
    :ivar resources: abstract resources the attempt needs on a worker (the task's
        ``resources=``), or ``None``
    :ivar where: set by the executor to where the body ran (a worker's address), as soon as
        it knows; recorded with the attempt and shown by ``sluiceway show``
    """

    __slots__ = ("attempt", "flow", "is_async", "key", "resources", "run_id", "task", "where")

    def __init__(
        self,
        run_id: int,
        flow: str,
        task: str,
        attempt: int,
        key: str,
        *,
        is_async: bool,
        resources: Mapping[str, float] | None = None,
    ) -> None:
        self.run_id = run_id
        self.flow = flow
        self.task = task
        self.attempt = attempt
        self.key = key
        self.is_async = is_async
        self.resources = resources
        self.where: str | None = None

    def __repr__(self) -> str:
        return f"AttemptCall({self.key!r}, where={self.where!r})"


class Executor(Plugin):
    """Runs task bodies somewhere other than the service's own event loop and threads.

    The engine keeps deciding (limits, retries with backoff, ``retry_on``, timeouts,
    cancellation, rules, SLAs); the executor only calls the body and hands back its result or
    its exception. Made once per service from the options of ``[executors.<plugin>]`` (already
    checked by :meth:`Plugin.check_options`), when the first attempt of a task with
    ``executor="<plugin>"`` starts; :meth:`aclose` is called when the service stops.

    The engine's own ``"local"`` executor (an ``async def`` on the event loop, a ``def`` on a
    daemon thread) is the default, and is called directly rather than through this class.
    """

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.options = options

    @abstractmethod
    async def call(
        self, fn: Callable[..., Any], args: Mapping[str, Any], attempt: AttemptCall
    ) -> Any:
        """Call ``fn(**args)`` there and return its result (or raise its exception).

        ``args["run"]``, when present, is the service-side :class:`runtime.Run`: ship a
        portable copy and hand the lines and checks the body made back to it
        (:mod:`runtime.define.remote` does both). Cancelled (a timeout, ``sluiceway cancel``,
        the service stopping): stop the remote call and free what it holds before raising
        the cancellation again. A failure of the executor itself (a worker or the connection
        lost, a result that cannot come back) is raised as an exception that says so: the
        attempt fails and the task's retry policy decides.
        """

    async def aclose(self) -> None:
        """Release what the executor holds (connections, local clusters)."""
