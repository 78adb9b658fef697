from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from runtime import Branch, Flow, Run, TaskOptions
from runtime.define.loader import load_flows
from runtime.define.options import OPTIONS
from runtime.errors import FlowValidationError, ParamError
from runtime.states import RunState, TaskState
from tests.conftest import MakeRunner

# --- helpers: one flow file in <tmp_path>/flows, loaded with the cwd at tmp_path ---


@pytest.fixture
def flows_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``<tmp_path>/flows``, with the cwd at tmp_path so messages say ``flows/etl.py:N``."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "flows"
    folder.mkdir()
    return folder


def line_of(source: str, needle: str, nth: int = 1) -> int:
    """1-based line of the *nth* line of the dedented *source* that contains *needle*."""
    hits = [i for i, line in enumerate(source.splitlines(), 1) if needle in line]
    return hits[nth - 1]


def problems_of(folder: Path, source: str, pools: list[str] | None = None) -> list[str]:
    (folder / "etl.py").write_text(source)
    loaded = load_flows(folder, pools)
    assert "etl" not in loaded.flows  # a flow with problems never runs
    return loaded.problems


def flow_file(body: str, flow: str = 'flow = Flow("etl")') -> str:
    """A flow file: the import, *flow*, then *body*; the Flow(...) call is on line 3."""
    return f"from runtime import Flow, Run\n\n{flow}\n\n\n" + textwrap.dedent(body)


# --- signature -> dependencies ---


def test_parameters_declare_data_deps_run_and_flow_params() -> None:
    flow = Flow("orders", params={"region": "eu"})

    @flow.task
    async def extract(run: Run, region: str) -> list[str]:
        return [region]

    @flow.task
    def clean(extract: list[str]) -> list[str]:
        return extract

    @flow.task(after=[clean])
    async def notify(run: Run) -> None:
        pass

    graph = flow.validate()
    assert (extract.data_deps, extract.flow_params, extract.wants_run) == ((), ("region",), True)
    assert (clean.data_deps, clean.flow_params, clean.wants_run) == (("extract",), (), False)
    assert (notify.data_deps, notify.after, notify.wants_run) == ((), ("clean",), True)
    assert graph.upstream == {"extract": (), "clean": ("extract",), "notify": ("clean",)}
    assert graph.downstream["extract"] == ("clean",)


async def test_tasks_receive_results_context_and_params(make_runner: MakeRunner) -> None:
    flow = Flow("orders", params={"region": "eu", "limit": 2})
    seen: list[str] = []

    @flow.task
    async def extract(run: Run, region: str, limit: int) -> list[str]:
        seen.append(f"{run.flow}.{run.task} attempt {run.attempt} {run.params}")
        return [f"{region}-{i}" for i in range(limit)]

    @flow.task
    def clean(extract: list[str]) -> list[str]:
        return [row.upper() for row in extract]

    @flow.task(after=[clean])
    async def notify(run: Run) -> str:
        return run.key

    async with make_runner() as runner:
        result = await runner.run(flow, {"region": "us"})
    assert result.state is RunState.SUCCEEDED
    assert result["extract"] == ["us-0", "us-1"]
    assert result["clean"] == ["US-0", "US-1"]
    assert result["notify"].startswith("orders/")
    assert result["notify"].endswith("/notify")
    assert seen == ["orders.extract attempt 1 {'region': 'us', 'limit': 2}"]


async def test_after_by_name_orders_without_passing_data(make_runner: MakeRunner) -> None:
    flow = Flow("ordering")
    ended: list[str] = []

    @flow.task
    async def load() -> int:
        ended.append("load")
        return 1

    @flow.task(after=["load"])
    async def notify() -> list[str]:
        return list(ended)

    assert flow.validate().upstream["notify"] == ("load",)
    async with make_runner() as runner:
        result = await runner.run(flow)
    assert result.tasks["notify"].state is TaskState.SUCCEEDED
    assert result["notify"] == ["load"]


def test_after_accepts_functions_tasks_names_and_a_single_name() -> None:
    flow = Flow("after")

    def helper() -> None: ...

    @flow.task
    def a() -> None: ...

    @flow.task(name="helper")
    def b() -> None: ...

    @flow.task(after=[a, "helper"])
    def clean() -> None: ...

    @flow.task(after="clean")
    def d() -> None: ...

    @flow.task(after=[helper])
    def e() -> None: ...

    assert flow.validate().upstream == {
        "a": (),
        "helper": (),
        "clean": ("a", "helper"),
        "d": ("clean",),
        "e": ("helper",),
    }


def test_after_and_data_dep_on_the_same_task_count_once() -> None:
    flow = Flow("once")

    @flow.task
    def a() -> int:
        return 1

    @flow.task(after=[a])
    def b(a: int) -> int:
        return a

    assert flow.validate().upstream["b"] == ("a",)


def test_validate_raises_listing_every_problem() -> None:
    flow = Flow("broken", params={"region": "eu"})

    @flow.task(retries=-1)
    def a(bogus: int) -> None: ...

    @flow.task(after=["nowhere"])
    def b(a: None) -> None: ...

    with pytest.raises(FlowValidationError) as info:
        flow.validate()
    problems = info.value.problems
    assert len(problems) == 3
    assert problems == tuple(flow.problems())
    assert "task 'a': retries must be a whole number >= 0, not -1" in problems[0]
    assert "task 'a' has parameter 'bogus'" in problems[1]
    assert "task 'b' depends on unknown task 'nowhere'" in problems[2]
    assert str(info.value) == "flow 'broken': " + "; ".join(problems)
    with pytest.raises(FlowValidationError):
        _ = flow.graph


def test_graph_order_is_topological_and_stable() -> None:
    flow = Flow("stable")

    @flow.task
    def report(load: None, audit: None) -> None: ...

    @flow.task
    def audit(extract: None) -> None: ...

    @flow.task
    def load(clean: None) -> None: ...

    @flow.task
    def extract() -> None: ...

    @flow.task
    def clean(extract: None) -> None: ...

    @flow.task
    def lonely() -> None: ...

    # whenever several tasks are ready, the one defined first comes next: report (defined
    # first) as soon as it is ready, lonely (defined last) only when nothing else is
    assert flow.graph.order == ("extract", "audit", "clean", "load", "report", "lonely")


def test_resolve_params_applies_overrides() -> None:
    flow = Flow("params", params={"region": "eu", "day": None})
    assert flow.resolve_params({"region": "us"}) == {"region": "us", "day": None}
    assert flow.resolve_params({}) == {"region": "eu", "day": None}


def test_resolve_params_rejects_unknown_names_listing_the_known_ones() -> None:
    flow = Flow("params", params={"region": "eu", "day": None})
    with pytest.raises(ParamError) as info:
        flow.resolve_params({"regoin": "us", "zone": 1})
    assert str(info.value) == "flow 'params' has no param 'regoin', 'zone' (params: day, region)"


def test_resolve_params_of_a_flow_without_params() -> None:
    with pytest.raises(ParamError, match=r"has no param 'x' \(params: none\)"):
        Flow("bare").resolve_params({"x": 1})


def test_branch_takes_names_and_tasks() -> None:
    flow = Flow("branch")

    @flow.task
    def full() -> None: ...

    assert Branch(full, "delta").names == ("full", "delta")
    assert repr(Branch("a")) == "Branch('a')"


# --- every validation message, with the file and line of the def or Flow(...) ---


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("retries=-1", "retries must be a whole number >= 0, not -1"),
        ("retries=1.5", "retries must be a whole number >= 0, not 1.5"),
        ("retries=True", "retries must be a whole number >= 0, not True"),
        (
            "retry_delay='soon'",
            "retry_delay 'soon' is not a duration (use seconds or e.g. '30s', '15m', '2h')",
        ),
        ("retry_delay=-2", "retry_delay must be a finite, non-negative duration, not -2"),
        ("backoff=0.5", "backoff must be a number >= 1, not 0.5"),
        ("backoff='2'", "backoff must be a number >= 1, not '2'"),
        ("max_delay='-1m'", "max_delay '-1m' is not a duration"),
        ("max_delay=None", "max_delay must be seconds or a string like '30s', not None"),
        ("timeout=0", "timeout must be longer than 0 seconds"),
        ("timeout='forever'", "timeout 'forever' is not a duration"),
        ("max_concurrency=0", "max_concurrency must be a whole number >= 1, not 0"),
        ("max_concurrency=False", "max_concurrency must be a whole number >= 1, not False"),
        ("jitter='yes'", "jitter must be True or False, not 'yes'"),
        ("retry_on=(ValueError, 'x')", "retry_on must be exception classes, not ['x']"),
        ("retry_on=int", "retry_on must be exception classes, not [<class 'int'>]"),
        ("retry_on='OSError'", "retry_on must be exception classes, not ['OSError']"),
        ("retry_on=()", "retry_on must be exception classes, not ()"),
        (
            "run_if='sometimes'",
            (
                "unknown run_if 'sometimes' (one of: all_succeeded, all_done, any_failed, "
                "all_failed, none_failed, any_succeeded)"
            ),
        ),
        ("pool='my pool'", "pool must be a name like 'warehouse', not 'my pool'"),
        ("after=5", "after must be a list of tasks or task names, not 5"),
        ("retires=3", "unknown option 'retires' (options: name, retries, retry_delay, backoff"),
    ],
)
def test_bad_task_option(flows_dir: Path, options: str, message: str) -> None:
    source = flow_file(
        f"""
        @flow.task
        def extract():
            return 1


        @flow.task({options})
        def load(extract):
            return extract
        """
    )
    [problem] = problems_of(flows_dir, source)
    where = f"flows/etl.py:{line_of(source, 'def load')}"
    assert problem.startswith(f"{where}: task 'load': {message}")


def test_task_options_are_typed_and_checked_from_one_table() -> None:
    """``TaskOptions`` (the types of ``@flow.task``'s keywords) and ``OPTIONS`` (their defaults
    and checks) name the same options, in the same order."""
    assert list(TaskOptions.__annotations__) == list(OPTIONS)


def test_several_wrong_options_are_listed_in_the_documented_order(flows_dir: Path) -> None:
    source = flow_file(
        """
        @flow.task(on_crash="never", retires=1, timeout=0, retries=-1)
        def load():
            return 1
        """
    )
    where = f"flows/etl.py:{line_of(source, 'def load')}: task 'load'"
    assert problems_of(flows_dir, source) == [
        f"{where}: retries must be a whole number >= 0, not -1",
        f"{where}: timeout must be longer than 0 seconds",
        f"{where}: on_crash must be 'retry' or 'fail', not 'never'",
        f"{where}: unknown option 'retires' (options: {', '.join(OPTIONS)})",
    ]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (
            "'bad name'",
            "task 'bad name': name must be letters, digits, '_', '.', '-', not 'bad name'",
        ),
        ("'run'", "task 'run': 'run' is reserved for the run context and cannot name a task"),
    ],
)
def test_bad_task_name(flows_dir: Path, name: str, message: str) -> None:
    source = flow_file(
        f"""
        @flow.task(name={name})
        def load():
            return 1
        """
    )
    assert problems_of(flows_dir, source) == [
        f"flows/etl.py:{line_of(source, 'def load')}: {message}"
    ]


def test_multi_line_decorator_reports_the_def_line(flows_dir: Path) -> None:
    source = flow_file(
        """
        @flow.task(
            retries=3,
            backoff=0,
        )
        async def load():
            return 1
        """
    )
    assert problems_of(flows_dir, source) == [
        (
            f"flows/etl.py:{line_of(source, 'async def load')}: task 'load': "
            "backoff must be a number >= 1, not 0"
        )
    ]


@pytest.mark.parametrize(
    ("flow", "message"),
    [
        ('Flow("etl", max_concurrency=0)', "max_concurrency must be a whole number >= 1, not 0"),
        (
            'Flow("etl", max_concurrency="4")',
            "max_concurrency must be a whole number >= 1, not '4'",
        ),
        ('Flow("etl", max_active_runs=-1)', "max_active_runs must be a whole number >= 1, not -1"),
        (
            'Flow("etl", max_active_runs=True)',
            "max_active_runs must be a whole number >= 1, not True",
        ),
        ('Flow("etl", params={"run": 1})', "'run' is reserved and cannot be a param"),
        ('Flow("etl", params={"a b": 1})', "param names must be identifiers, not ['a b']"),
    ],
)
def test_bad_flow_option(flows_dir: Path, flow: str, message: str) -> None:
    source = flow_file(
        """
        @flow.task
        def load():
            return 1
        """,
        flow=f"flow = {flow}",
    )
    assert problems_of(flows_dir, source) == [f"flows/etl.py:3: flow 'etl': {message}"]


def test_bad_flow_name(flows_dir: Path) -> None:
    source = flow_file("", flow='flow = Flow("my flow")')
    (flows_dir / "etl.py").write_text(source)
    problems = load_flows(flows_dir).problems
    assert problems == [
        "flows/etl.py:3: flow name must be letters, digits, '_', '.', '-', not 'my flow'",
        "flows/etl.py:3: flow 'my flow' has no tasks",
    ]


def test_multi_line_flow_call_reports_its_first_line(flows_dir: Path) -> None:
    source = textwrap.dedent(
        """\
        from runtime import Flow

        # a comment, so the flow is not made on line 3

        flow = Flow(
            "etl",
            max_concurrency=0,
        )


        @flow.task
        def load():
            return 1
        """
    )
    assert problems_of(flows_dir, source) == [
        (
            f"flows/etl.py:{line_of(source, 'Flow(')}: flow 'etl': "
            "max_concurrency must be a whole number >= 1, not 0"
        )
    ]


def test_unknown_parameter_names_task_param_and_flow(flows_dir: Path) -> None:
    source = flow_file(
        """
        @flow.task
        def extract():
            return 1


        @flow.task
        def load(extract, extarct):
            return extract
        """,
        flow='flow = Flow("etl", params={"region": "eu"})',
    )
    assert problems_of(flows_dir, source) == [
        (
            f"flows/etl.py:{line_of(source, 'def load')}: task 'load' has parameter 'extarct' "
            "that is not a task, a param of flow 'etl', or 'run'"
        )
    ]


@pytest.mark.parametrize(
    ("signature", "message"),
    [
        ("*rows", "takes *rows; parameters must each be a task, a flow param, or 'run'"),
        ("**extra", "takes **extra; parameters must each be a task, a flow param, or 'run'"),
        ("run, /", "parameter 'run' is positional-only"),
    ],
)
def test_star_and_positional_only_parameters_are_rejected(
    flows_dir: Path, signature: str, message: str
) -> None:
    source = flow_file(
        f"""
        @flow.task
        def load({signature}):
            return 1
        """
    )
    assert problems_of(flows_dir, source) == [
        f"flows/etl.py:{line_of(source, 'def load')}: task 'load': {message}"
    ]


def test_cycle_is_reported_with_its_path(flows_dir: Path) -> None:
    source = flow_file(
        """
        @flow.task
        def a(c):
            return c


        @flow.task
        def b(a):
            return a


        @flow.task
        def c(b):
            return b
        """
    )
    assert problems_of(flows_dir, source) == [
        f"flows/etl.py:{line_of(source, 'def a')}: flow 'etl' has a cycle: a -> b -> c -> a"
    ]


def test_cycle_through_after(flows_dir: Path) -> None:
    source = flow_file(
        """
        @flow.task(after=["load"])
        def extract():
            return 1


        @flow.task
        def load(extract):
            return extract
        """
    )
    assert problems_of(flows_dir, source) == [
        (
            f"flows/etl.py:{line_of(source, 'def extract')}: flow 'etl' has a cycle: "
            "extract -> load -> extract"
        )
    ]


@pytest.mark.parametrize(
    ("decorator", "signature"),
    [("@flow.task", "load"), ('@flow.task(after=["load"])', "")],
    ids=["by-parameter", "by-after"],
)
def test_self_cycle(flows_dir: Path, decorator: str, signature: str) -> None:
    source = flow_file(
        f"""
        {decorator}
        def load({signature}):
            return 1
        """
    )
    assert problems_of(flows_dir, source) == [
        f"flows/etl.py:{line_of(source, 'def load')}: flow 'etl' has a cycle: load -> load"
    ]


def test_unknown_dependency_via_after(flows_dir: Path) -> None:
    source = flow_file(
        """
        @flow.task
        def load():
            return 1


        @flow.task(after=["lod", load])
        def notify():
            return None
        """
    )
    assert problems_of(flows_dir, source) == [
        f"flows/etl.py:{line_of(source, 'def notify')}: task 'notify' depends on unknown task 'lod'"
    ]


def test_duplicate_task_names_give_both_lines(flows_dir: Path) -> None:
    source = flow_file(
        """
        @flow.task
        def load():
            return 1


        @flow.task(name="load")
        def load_again():
            return 2
        """
    )
    assert problems_of(flows_dir, source) == [
        (
            f"flows/etl.py:{line_of(source, 'def load_again')}: task 'load' is defined twice in "
            f"flow 'etl' (first at flows/etl.py:{line_of(source, 'def load():')})"
        )
    ]


def test_run_if_needs_an_upstream(flows_dir: Path) -> None:
    source = flow_file(
        """
        @flow.task(run_if="all_done")
        def report():
            return 1
        """
    )
    assert problems_of(flows_dir, source) == [
        (
            f"flows/etl.py:{line_of(source, 'def report')}: task 'report' has "
            "run_if='all_done' but no upstream tasks"
        )
    ]


def test_run_if_with_an_after_upstream_is_valid(flows_dir: Path) -> None:
    source = flow_file(
        """
        @flow.task
        def load():
            return 1


        @flow.task(after=[load], run_if="all_done")
        def report():
            return 1
        """
    )
    (flows_dir / "etl.py").write_text(source)
    loaded = load_flows(flows_dir)
    assert loaded.problems == []
    assert list(loaded.flows) == ["etl"]


@pytest.mark.parametrize(
    ("map_to", "signature", "after"),
    [
        ("items", "extract", "[]"),  # not a parameter at all
        ("region", "extract, region", "[]"),  # a flow param, not a task
        ("extract", "", "[extract]"),  # upstream, but not a parameter
    ],
    ids=["not-a-parameter", "flow-param", "after-only"],
)
def test_map_must_name_an_upstream_parameter(
    flows_dir: Path, map_to: str, signature: str, after: str
) -> None:
    source = flow_file(
        f"""
        @flow.task
        def extract():
            return [1, 2]


        @flow.task(map="{map_to}", after={after})
        def load({signature}):
            return 1
        """,
        flow='flow = Flow("etl", params={"region": "eu"})',
    )
    assert problems_of(flows_dir, source) == [
        (
            f"flows/etl.py:{line_of(source, 'def load')}: task 'load': map='{map_to}' must name "
            "a parameter of 'load' that is an upstream task"
        )
    ]


POOLED = flow_file(
    """
    @flow.task(pool="warhouse")
    def load():
        return 1
    """
)


@pytest.mark.parametrize(
    ("pools", "configured"), [(["warehouse", "api"], "api, warehouse"), ([], "none")]
)
def test_unknown_pool_when_pools_are_given(
    flows_dir: Path, pools: list[str], configured: str
) -> None:
    assert problems_of(flows_dir, POOLED, pools) == [
        (
            f"flows/etl.py:{line_of(POOLED, 'def load')}: task 'load' uses pool 'warhouse', which "
            f"is not sized in [pools] of the config (configured: {configured})"
        )
    ]


def test_pool_is_not_checked_without_pools(flows_dir: Path) -> None:
    (flows_dir / "etl.py").write_text(POOLED)
    assert load_flows(flows_dir, pools=None).problems == []


def test_param_that_is_both_a_task_and_a_flow_param(flows_dir: Path) -> None:
    source = flow_file(
        """
        @flow.task
        def extract():
            return 1


        @flow.task
        def load(extract):
            return extract
        """,
        flow='flow = Flow("etl", params={"extract": "all"})',
    )
    assert problems_of(flows_dir, source) == [
        (
            f"flows/etl.py:{line_of(source, 'def load')}: task 'load': parameter 'extract' is "
            "both a task and a flow param of 'etl'; rename one"
        )
    ]
