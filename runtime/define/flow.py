"""Flow and the ``@flow.task`` decorator: checks a flow's tasks and wiring as one DAG."""

from __future__ import annotations

import hashlib
import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Unpack, overload

from runtime.alerting import flow_routes
from runtime.define.checks import CheckDef, Severity, flow_check_problems
from runtime.define.flowchecks import flow_option_problems, place_task, unstorable
from runtime.define.graph import Graph, build_graph, find_cycle
from runtime.define.sources import EventTrigger, FlowTrigger, SourceTrigger, source_problems
from runtime.define.task import RULES, RUN_PARAM, Branch, Task, TaskOptions, location
from runtime.define.triggers import (
    DEFAULT_MAX_CATCHUP,
    CatchupPolicy,
    CronTrigger,
    EveryTrigger,
    catchup_problems,
    load_zone,
)
from runtime.define.views import TriggerViews, alert_problems
from runtime.durations import parse_duration
from runtime.errors import FlowValidationError, ParamError, SluicewayError

# Branch, Task and RULES are defined in runtime.define.task; they stay importable from here
__all__ = ["RULES", "RUN_PARAM", "Branch", "Flow", "Task"]

if TYPE_CHECKING:
    from runtime.define.result import RunResult

# set by runtime.define.importing while it imports a flow file, so every Flow made there is found
_collector: list[Flow] | None = None


class Flow(TriggerViews):
    """A named DAG of tasks, declared by decorating functions with :meth:`task`.

    :param name: unique among the loaded flows; letters, digits, ``_ . -``
    :param params: defaults for the run parameters; a task parameter with the same name gets
        the value, and each run may override it
    :param max_concurrency: most tasks of this flow running at once, over all its runs
    :param max_active_runs: most runs of this flow running at once; others wait queued
    :param description: one line shown by ``sluiceway flows``
    :param triggers: when the service starts runs: ``cron(...)``, ``every(...)`` (time),
        ``files(...)`` (files landing in a folder), ``on_event(...)`` (an HTTP signal or
        ``sluiceway emit``), ``on_flow(...)`` (an upstream flow's run ending), ``source(...)``
        (a third-party trigger plugin)
    :param catchup: after downtime, which missed scheduled instants run: ``"none"``,
        ``"latest"`` (only the most recent) or ``"all"`` (up to ``max_catchup``)
    :param max_catchup: most missed instants ``catchup="all"`` runs; older ones are skipped
        and logged
    :param sla: a run must end within this of its logical date (seconds or ``"45m"``); a miss
        is recorded once as an ``sla.missed`` event while the run still goes
    :param tz: the zone logical dates are shown in (default: the first cron trigger's, else
        UTC)
    :param alerts: this flow's own alert routes, dicts with the fields of a config
        ``[[alerts]]`` route but ``flows``: ``{"on": ["run.failed"], "to": ["slack:ops"],
        "digest": "15m"}``; checked when the flow loads
    :param executor: where its tasks' bodies run unless a task says otherwise: ``"local"``
        (the default) or an executor configured in ``[executors.<name>]`` (``"dask"``)
    """

    def __init__(
        self,
        name: str,
        *,
        params: Mapping[str, Any] | None = None,
        max_concurrency: int | None = None,
        max_active_runs: int | None = None,
        description: str | None = None,
        triggers: Iterable[Any] = (),
        catchup: CatchupPolicy = "latest",
        max_catchup: int = DEFAULT_MAX_CATCHUP,
        sla: float | str | None = None,
        tz: str | None = None,
        alerts: Iterable[Any] = (),
        executor: str | None = None,
    ) -> None:
        frame = sys._getframe(1)
        self.where = location(frame.f_code.co_filename, frame.f_lineno)
        self.path: Path | None = Path(frame.f_code.co_filename)
        self.name = name
        self.params: dict[str, Any] = dict(params or {})
        self.max_concurrency = max_concurrency
        self.max_active_runs = max_active_runs
        self.description = description
        self.tasks: dict[str, Task] = {}
        self.checks: dict[str, list[CheckDef]] = {}  # by the task they judge
        self._problems: list[str] = []
        self._graph: Graph | None = None
        self._checked_pools: frozenset[str] | None = None
        self._checked_executors: frozenset[str] | None = None
        self._source_hash: str | None = None
        self.triggers: tuple[Any, ...] = tuple(triggers)
        self.catchup: str = catchup  # as given: _init_schedule checks it
        self.max_catchup = max_catchup
        self.sla: float | None = None
        self._init_schedule(sla, tz)
        self.executor = executor if isinstance(executor, str) else None
        self._check_options(executor)
        self.alerts, problems = flow_routes(name, self.where, alerts)
        self._problems.extend(problems)
        if _collector is not None:
            _collector.append(self)

    def _check_options(self, executor: object) -> None:
        """Record what is wrong with the flow's name, limits, params and executor."""
        limits = {"max_concurrency": self.max_concurrency, "max_active_runs": self.max_active_runs}
        self._problems.extend(
            flow_option_problems(self.where, self.name, limits, self.params, executor)
        )

    def _init_schedule(self, sla: float | str | None, tz: str | None) -> None:
        where = f"{self.where}: flow {self.name!r}"
        for trigger in self.triggers:
            if isinstance(trigger, CronTrigger | EveryTrigger):
                self._problems.extend(f"{where}: {p}" for p in trigger.problems)
            elif isinstance(trigger, SourceTrigger | EventTrigger | FlowTrigger):
                at = f"{trigger.where or self.where}: flow {self.name!r}"
                self._problems.extend(f"{at}: {p}" for p in trigger.problems)
            else:
                self._problems.append(
                    f"{where}: triggers must be cron(...), every(...), files(...), "
                    f"on_event(...), on_flow(...) or source(...), not {trigger!r}"
                )
        self._problems.extend(
            f"{where}: {p}" for p in catchup_problems(self.catchup, self.max_catchup)
        )
        if sla is not None:
            try:
                self.sla = parse_duration(sla, what="sla")
            except ValueError as exc:
                self._problems.append(f"{where}: {exc}")
        crons = [t for t in self.triggers if isinstance(t, CronTrigger) and not t.problems]
        self.tz = tz or (crons[0].tz if crons else "UTC")
        if tz is not None:
            try:
                load_zone(tz)
            except SluicewayError as exc:
                self._problems.append(f"{where}: {exc}")

    # --- declaring tasks ---

    @overload
    def task(self, func: Callable[..., Any], /) -> Task: ...

    @overload
    def task(self, /, **options: Unpack[TaskOptions]) -> Callable[[Callable[..., Any]], Task]: ...

    def task(
        self, func: Callable[..., Any] | None = None, /, **options: Any
    ) -> Task | Callable[[Callable[..., Any]], Task]:
        """Declare a task; use bare (``@flow.task``) or with options (``@flow.task(retries=3)``).

        A parameter named after another task of the flow makes that task an upstream and
        receives its result; ``run`` receives the :class:`~runtime.define.context.Run` context; a
        parameter named after a flow param receives its value.

        :param options: see :class:`~runtime.define.options.TaskOptions` (retries, timeout,
            pool, run_if, map, ...); a wrong or unknown option is a problem of the flow, with
            the file and line of the task
        """

        def decorate(fn: Callable[..., Any]) -> Task:
            task = Task(self, fn, options)
            if task.name in self.tasks:
                other = self.tasks[task.name]
                self._problems.append(
                    f"{task.where}: task {task.name!r} is defined twice in flow {self.name!r} "
                    f"(first at {other.where})"
                )
            else:
                self.tasks[task.name] = task
            self._graph = None
            return task

        if func is not None:
            return decorate(func)
        return decorate

    def check(
        self,
        *,
        after: str | Callable[..., Any],
        severity: Severity = "error",
        name: str | None = None,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Declare a data-quality check of task *after*'s result: the function gets the
        result of each succeeded attempt and returns a bool or ``(bool, detail)``.

        A failed check records ``quality.failed``; ``severity="error"`` fails the attempt (its
        retries apply), ``"warn"`` only alerts. A check that raises counts as failed.
        """

        def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
            check = CheckDef(fn, after, severity, name)
            self.checks.setdefault(check.after, []).append(check)
            return fn

        return decorate

    # --- checking ---

    def problems(
        self, pools: Iterable[str] | None = None, executors: Iterable[str] | None = None
    ) -> list[str]:
        """Every problem with this flow, each prefixed with the file and line it comes from.

        Also reads each task's parameters as data dependencies, flow params or ``run``.

        :param pools: names of the configured pools; when given, unknown pools are problems
        :param executors: names of the configured executors; when given, tasks that use
            another (but ``"local"``) are problems
        """
        out = list(self._problems)
        configured = None if executors is None else frozenset(executors)
        out.extend(source_problems(self.name, self.where, self.sources))
        out.extend(alert_problems(self.alerts))
        out.extend(flow_check_problems(self.name, self.checks, self.tasks))
        if not self.tasks:
            out.append(f"{self.where}: flow {self.name!r} has no tasks")
        upstream: dict[str, tuple[str, ...]] = {}
        for task in self.tasks.values():
            out.extend(self._wire(task))
            out.extend(self._task_problems(task, pools))
            placed = place_task(task, self.executor, configured)
            if placed is not None:
                out.append(placed)
            upstream[task.name] = tuple(d for d in task.upstream if d in self.tasks)
        cycle = find_cycle(upstream)
        if cycle:
            first = self.tasks[cycle[0]]
            out.append(f"{first.where}: flow {self.name!r} has a cycle: {' -> '.join(cycle)}")
        return out

    def _wire(self, task: Task) -> list[str]:
        """Sort *task*'s parameters into upstream tasks, flow params and ``run``; the problems
        of the task itself and of its parameters."""
        found = [f"{task.where}: task {task.name!r}: {p}" for p in task.problems]
        data, fparams, wants_run = [], [], False
        for pname in task.params:
            if pname == RUN_PARAM:
                wants_run = True
            elif pname in self.tasks:
                if pname in self.params:
                    found.append(
                        f"{task.where}: task {task.name!r}: parameter {pname!r} is both a "
                        f"task and a flow param of {self.name!r}; rename one"
                    )
                data.append(pname)
            elif pname in self.params:
                fparams.append(pname)
            else:
                found.append(
                    f"{task.where}: task {task.name!r} has parameter {pname!r} that is not "
                    f"a task, a param of flow {self.name!r}, or 'run'"
                )
        task.data_deps, task.flow_params, task.wants_run = tuple(data), tuple(fparams), wants_run
        return found

    def _task_problems(self, task: Task, pools: Iterable[str] | None) -> list[str]:
        """What is wrong with *task* within this flow: unknown upstreams, a map or run_if
        without upstreams to apply to, a pool the config does not size."""
        where = f"{task.where}: task {task.name!r}"
        found = [
            f"{where} depends on unknown task {dep!r}"
            for dep in task.after
            if dep not in self.tasks
        ]
        if task.map is not None and task.map not in task.data_deps:
            found.append(
                f"{where}: map={task.map!r} must name a parameter of {task.name!r} that is an "
                "upstream task"
            )
        if task.run_if != "all_succeeded" and not task.upstream:
            found.append(f"{where} has run_if={task.run_if!r} but no upstream tasks")
        if pools is not None and task.pool is not None and task.pool not in pools:
            known = ", ".join(sorted(pools)) or "none"
            found.append(
                f"{where} uses pool {task.pool!r}, which is not sized in [pools] of the config "
                f"(configured: {known})"
            )
        return found

    def validate(
        self, pools: Iterable[str] | None = None, executors: Iterable[str] | None = None
    ) -> Graph:
        """Check the flow and return its graph (*pools*, *executors*: see :meth:`problems`).

        :raises FlowValidationError: listing every problem
        """
        checked = None if pools is None else frozenset(pools)
        places = None if executors is None else frozenset(executors)
        if (
            self._graph is not None
            and (checked is None or checked == self._checked_pools)
            and (places is None or places == self._checked_executors)
        ):
            return self._graph  # every run validates: a flow unchanged since is not re-checked
        problems = self.problems(checked, places)
        if problems:
            raise FlowValidationError(f"flow {self.name!r}", problems)
        self._graph = build_graph({t.name: t.upstream for t in self.tasks.values()})
        self._checked_pools = checked
        self._checked_executors = places
        return self._graph

    @property
    def graph(self) -> Graph:
        return self.validate()

    def source_hash(self) -> str:
        """sha256 of the flow's file when it was first asked, to tell which version a run used."""
        if self._source_hash is None:
            try:
                data = self.path.read_bytes() if self.path else b""
            except OSError:
                data = b""
            self._source_hash = hashlib.sha256(data).hexdigest()[:16]
        return self._source_hash

    def resolve_params(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """The flow's params with *overrides* applied.

        :raises ParamError: for a name the flow does not declare, or a value that cannot be
            stored with the run so that a retry or resume sees the same value
        """
        unknown = sorted(set(overrides) - set(self.params))
        if unknown:
            known = ", ".join(sorted(self.params)) or "none"
            raise ParamError(
                f"flow {self.name!r} has no param {', '.join(map(repr, unknown))} (params: {known})"
            )
        resolved = {**self.params, **overrides}
        for key, value in resolved.items():
            why = unstorable(value)
            if why is not None:
                raise ParamError(f"flow {self.name!r}: param {key!r}: {why}")
        return resolved

    # --- running from Python ---

    def run(self, **params: Any) -> RunResult:
        """Run the flow to the end in a new event loop and return the finished run.

        The store and limits come from ``sluiceway.toml`` / ``SLUICEWAY_*`` (default
        ``./sluiceway.db``). Keyword arguments override the flow's params.
        """
        result: RunResult = _standalone().run_flow(self, params)
        return result

    async def arun(self, **params: Any) -> RunResult:
        """Like :meth:`run`, inside a running event loop."""
        result: RunResult = await _standalone().arun_flow(self, params)
        return result

    def __repr__(self) -> str:
        return f"<Flow {self.name!r} tasks={list(self.tasks)}>"


def _standalone() -> Any:
    """:mod:`runtime.engine.standalone`, imported when a flow is run from Python: the
    definition layer never imports the engine (which imports it), and ``import runtime``
    stays free of the engine and the store."""
    return importlib.import_module("runtime.engine.standalone")
