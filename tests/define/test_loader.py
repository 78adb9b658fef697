from __future__ import annotations

import sys
import textwrap
import typing
from decimal import Decimal
from pathlib import Path

import pytest

from runtime.cli.main import main
from runtime.define.loader import flow_files, load_flows

GOOD = """\
from runtime import Flow

flow = Flow("{name}")


@flow.task
def extract():
    return [1, 2]


@flow.task
def load(extract):
    return len(extract)
"""


@pytest.fixture
def flows_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``<tmp_path>/flows``, with the cwd at tmp_path so messages say ``flows/x.py:N``."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "flows"
    folder.mkdir()
    return folder


def write(folder: Path, name: str, source: str) -> str:
    """Write the dedented *source* to ``folder/name`` and return the dedented text."""
    text = textwrap.dedent(source)
    (folder / name).write_text(text)
    return text


def line_of(source: str, needle: str) -> int:
    return next(i for i, line in enumerate(source.splitlines(), 1) if needle in line)


def test_loads_every_flow_file(flows_dir: Path) -> None:
    write(flows_dir, "orders.py", GOOD.format(name="orders"))
    write(flows_dir, "users.py", GOOD.format(name="users"))
    loaded = load_flows(flows_dir)
    assert loaded.problems == []
    assert sorted(loaded.flows) == ["orders", "users"]
    assert loaded.files == {flows_dir / "orders.py": ["orders"], flows_dir / "users.py": ["users"]}
    assert loaded.flows["orders"].graph.order == ("extract", "load")
    assert loaded.flows["orders"].path == flows_dir / "orders.py"


def test_one_file_may_define_several_flows(flows_dir: Path) -> None:
    write(
        flows_dir,
        "pair.py",
        """\
        from runtime import Flow

        first = Flow("first")
        second = Flow("second")

        first.task(lambda: 1, name="one")
        second.task(lambda: 2, name="two")
        """,
    )
    loaded = load_flows(flows_dir)
    assert loaded.problems == []
    assert loaded.files[flows_dir / "pair.py"] == ["first", "second"]


def test_every_problem_of_every_file_at_once(flows_dir: Path) -> None:
    write(flows_dir, "good.py", GOOD.format(name="good"))
    a = write(
        flows_dir,
        "a.py",
        """\
        from runtime import Flow

        flow = Flow("a", max_active_runs=0)


        @flow.task(retries=-1)
        def extract(nope):
            return 1


        @flow.task(after=["missing"])
        def load(extract):
            return extract
        """,
    )
    b = write(
        flows_dir,
        "b.py",
        """\
        from runtime import Flow

        flow = Flow("b")


        @flow.task(timeout="soon")
        def only():
            return 1
        """,
    )
    loaded = load_flows(flows_dir)
    extract, load, only = line_of(a, "def extract"), line_of(a, "def load"), line_of(b, "def only")
    assert loaded.problems == [
        "flows/a.py:3: flow 'a': max_active_runs must be a whole number >= 1, not 0",
        f"flows/a.py:{extract}: task 'extract': retries must be a whole number >= 0, not -1",
        (
            f"flows/a.py:{extract}: task 'extract' has parameter 'nope' that is not a task, a "
            "param of flow 'a', or 'run'"
        ),
        f"flows/a.py:{load}: task 'load' depends on unknown task 'missing'",
        (
            f"flows/b.py:{only}: task 'only': timeout 'soon' is not a duration (use seconds or "
            "e.g. '30s', '15m', '2h')"
        ),
    ]
    assert list(loaded.flows) == ["good"]
    assert loaded.broken == {"a", "b"}


def test_flow_with_problems_does_not_stop_another_in_the_same_file(flows_dir: Path) -> None:
    write(
        flows_dir,
        "pair.py",
        """\
        from runtime import Flow

        good = Flow("good")
        bad = Flow("bad")

        good.task(lambda: 1, name="one")
        bad.task(lambda nope: 2, name="two")
        """,
    )
    loaded = load_flows(flows_dir)
    assert list(loaded.flows) == ["good"]
    assert loaded.broken == {"bad"}
    assert len(loaded.problems) == 1
    assert "task 'two' has parameter 'nope'" in loaded.problems[0]


def test_syntax_error_is_reported_and_other_files_load(flows_dir: Path) -> None:
    write(flows_dir, "good.py", GOOD.format(name="good"))
    broken = write(
        flows_dir,
        "broken.py",
        """\
        from runtime import Flow

        flow = Flow("broken")

        def extract(:
            return 1
        """,
    )
    loaded = load_flows(flows_dir)
    [problem] = loaded.problems
    assert problem.startswith(f"flows/broken.py:{line_of(broken, 'def extract')}: cannot import: ")
    assert "SyntaxError" in problem
    assert list(loaded.flows) == ["good"]
    assert loaded.files[flows_dir / "broken.py"] == []


def test_exception_at_import_gives_the_line_and_end_of_traceback(flows_dir: Path) -> None:
    write(flows_dir, "good.py", GOOD.format(name="good"))
    source = write(
        flows_dir,
        "boom.py",
        """\
        from runtime import Flow

        flow = Flow("boom")


        def settings():
            return {"region": "eu"}["zone"]


        ZONE = settings()
        """,
    )
    loaded = load_flows(flows_dir)
    [problem] = loaded.problems
    first, *frames = problem.splitlines()
    # the innermost line of the file: where it was raised, not where the module called it
    raised = line_of(source, "return {")
    assert first == f"flows/boom.py:{raised}: cannot import: KeyError: 'zone'"
    # the last two frames, innermost last, without the importer's own frames
    assert [f for f in frames if f.strip(" ~^")] == [
        f'  File "{flows_dir / "boom.py"}", line {line_of(source, "ZONE = ")}, in <module>',
        "    ZONE = settings()",
        f'  File "{flows_dir / "boom.py"}", line {line_of(source, "return {")}, in settings',
        '    return {"region": "eu"}["zone"]',
    ]
    assert list(loaded.flows) == ["good"]
    assert "boom" not in loaded.broken  # it was never made


def test_exception_in_a_helper_points_at_the_import_line(flows_dir: Path) -> None:
    write(flows_dir, "_settings.py", 'raise RuntimeError("no credentials")\n')
    source = write(
        flows_dir,
        "etl.py",
        """\
        from runtime import Flow

        import _settings

        flow = Flow("etl")
        """,
    )
    [problem] = load_flows(flows_dir).problems
    first, *frames = problem.splitlines()
    assert first == (
        f"flows/etl.py:{line_of(source, 'import _settings')}: cannot import: "
        "RuntimeError: no credentials"
    )
    assert [f for f in frames if f.strip(" ~^")][-2:] == [
        f'  File "{flows_dir / "_settings.py"}", line 1, in <module>',
        '    raise RuntimeError("no credentials")',
    ]


def test_syntax_error_in_a_helper_names_the_helper(flows_dir: Path) -> None:
    write(flows_dir, "_shapes.py", "x = 1\ny = (\n")
    source = write(flows_dir, "etl.py", "from runtime import Flow\nimport _shapes\n")
    [problem] = load_flows(flows_dir).problems
    assert problem.startswith(f"flows/etl.py:{line_of(source, 'import _shapes')}: cannot import: ")
    assert problem.endswith("(flows/_shapes.py:2)")


def test_system_exit_at_import_is_a_problem(flows_dir: Path) -> None:
    write(flows_dir, "quits.py", "import sys\n\nsys.exit(3)\n")
    [problem] = load_flows(flows_dir).problems
    # raised by the module itself: its one frame, without the importer's frames before it
    assert problem.splitlines() == [
        "flows/quits.py:3: cannot import: SystemExit: 3",
        f'  File "{flows_dir / "quits.py"}", line 3, in <module>',
        "    sys.exit(3)",
    ]


def test_keyboard_interrupt_at_import_is_not_swallowed(flows_dir: Path) -> None:
    write(flows_dir, "stop.py", "raise KeyboardInterrupt\n")
    with pytest.raises(KeyboardInterrupt):
        load_flows(flows_dir)


def test_file_defining_no_flow(flows_dir: Path) -> None:
    write(flows_dir, "good.py", GOOD.format(name="good"))
    write(flows_dir, "notes.py", "ANSWER = 42\n")
    loaded = load_flows(flows_dir)
    assert loaded.problems == ["flows/notes.py:1: defines no Flow"]
    assert list(loaded.flows) == ["good"]


def test_underscore_and_hidden_files_are_skipped(flows_dir: Path) -> None:
    write(flows_dir, "etl.py", GOOD.format(name="etl"))
    write(flows_dir, "_private.py", "raise RuntimeError('must not be imported')\n")
    write(flows_dir, ".hidden.py", "raise RuntimeError('must not be imported')\n")
    write(flows_dir, "notes.txt", "not python")
    (flows_dir / "sub").mkdir()
    write(flows_dir / "sub", "nested.py", "raise RuntimeError('must not be imported')\n")
    assert flow_files(flows_dir) == [flows_dir / "etl.py"]
    loaded = load_flows(flows_dir)
    assert loaded.problems == []
    assert list(loaded.flows) == ["etl"]


def test_flow_file_imports_a_helper_beside_it(flows_dir: Path) -> None:
    write(flows_dir, "_shared.py", 'REGION = "eu"\n')
    write(
        flows_dir,
        "etl.py",
        """\
        from runtime import Flow

        from _shared import REGION

        flow = Flow("etl", params={"region": REGION})
        flow.task(lambda region: region, name="extract")
        """,
    )
    loaded = load_flows(flows_dir)
    assert loaded.problems == []
    assert loaded.flows["etl"].params == {"region": "eu"}
    assert str(flows_dir.resolve()) not in sys.path  # the folder is on sys.path only meanwhile


def test_reload_sees_an_edited_helper(flows_dir: Path) -> None:
    source = """\
        from runtime import Flow

        from _shared import REGION

        flow = Flow("etl", params={"region": REGION})
        flow.task(lambda region: region, name="extract")
        """
    write(flows_dir, "_shared.py", 'REGION = "eu"\n')
    write(flows_dir, "etl.py", source)
    assert load_flows(flows_dir).flows["etl"].params == {"region": "eu"}
    write(flows_dir, "_shared.py", 'REGION = "us"\n')
    assert load_flows(flows_dir).flows["etl"].params == {"region": "us"}


def test_two_folders_with_same_helper_name_stay_apart(tmp_path: Path) -> None:
    regions = {}
    for region in ("eu", "us"):
        folder = tmp_path / region
        folder.mkdir()
        write(folder, "_shared.py", f"REGION = {region!r}\n")
        write(
            folder,
            "etl.py",
            """\
            from runtime import Flow

            from _shared import REGION

            flow = Flow("etl", params={"region": REGION})
            flow.task(lambda region: region, name="extract")
            """,
        )
        regions[region] = load_flows(folder).flows["etl"].params["region"]
    assert regions == {"eu": "eu", "us": "us"}


def test_flow_module_keeps_its_globals_for_type_hints(flows_dir: Path) -> None:
    write(
        flows_dir,
        "etl.py",
        """\
        from __future__ import annotations

        from dataclasses import dataclass
        from decimal import Decimal

        from runtime import Flow

        flow = Flow("etl")


        @dataclass
        class Row:
            amount: Decimal


        @flow.task
        def extract():
            return Row(Decimal("1.5"))
        """,
    )
    row = load_flows(flows_dir).flows["etl"].tasks["extract"]()
    # resolving "Decimal" needs the flow module, found by name in sys.modules
    assert typing.get_type_hints(type(row)) == {"amount": Decimal}


def test_duplicate_flow_names_across_files(flows_dir: Path) -> None:
    write(flows_dir, "a.py", GOOD.format(name="etl"))
    write(flows_dir, "b.py", GOOD.format(name="etl"))
    write(flows_dir, "c.py", GOOD.format(name="other"))
    loaded = load_flows(flows_dir)
    assert loaded.problems == ["flows/b.py:3: flow name 'etl' is already used at flows/a.py:3"]
    # which of the two was meant is unclear, so neither runs
    assert list(loaded.flows) == ["other"]
    assert loaded.broken == {"etl"}


def test_missing_folder(tmp_path: Path) -> None:
    loaded = load_flows(tmp_path / "nowhere")
    assert loaded.problems == [f"{tmp_path / 'nowhere'}: flows folder not found"]
    assert loaded.flows == {}


def test_loading_twice_gives_fresh_flows(flows_dir: Path) -> None:
    write(flows_dir, "etl.py", GOOD.format(name="etl"))
    first = load_flows(flows_dir).flows["etl"]
    write(flows_dir, "etl.py", GOOD.format(name="etl").replace("[1, 2]", "[1, 2, 3]"))
    second = load_flows(flows_dir).flows["etl"]
    assert first is not second
    assert second.tasks["extract"]() == [1, 2, 3]
    assert first.tasks["extract"]() == [1, 2]


# --- sluiceway validate, in process ---


@pytest.fixture
def cli(cli_env: Path, flows_dir: Path) -> Path:
    """The flows folder; no SLUICEWAY_* variables, the cwd (tmp_path) has no sluiceway.toml
    unless a test writes one, the CLI's logging setup is undone afterwards (``cli_env``)."""
    return flows_dir


@pytest.mark.slow
def test_validate_clean_folder_exits_0(cli: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(cli, "orders.py", GOOD.format(name="orders"))
    write(cli, "users.py", GOOD.format(name="users"))
    assert main(["validate", "--flows", "flows"]) == 0
    out, err = capsys.readouterr()
    assert out == "2 flow(s) OK in flows\n"
    assert err == ""


@pytest.mark.slow
def test_validate_with_problems_exits_1(cli: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(cli, "good.py", GOOD.format(name="good"))
    write(cli, "bad.py", GOOD.format(name="bad").replace("(extract)", "(extrac)"))
    assert main(["validate", "--flows", "flows"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        (
            f"flows/bad.py:{line_of(GOOD, 'def load')}: task 'load' has parameter 'extrac' that is "
            "not a task, a param of flow 'bad', or 'run'"
        ),
        "1 problem(s) in flows",
    ]


@pytest.mark.slow
def test_validate_order_prints_each_flow(cli: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(cli, "users.py", GOOD.format(name="users"))
    write(
        cli,
        "orders.py",
        """\
        from runtime import Flow

        flow = Flow("orders")


        @flow.task(after=["load"])
        def notify():
            return None


        @flow.task
        def load(clean):
            return clean


        @flow.task
        def extract():
            return 1


        @flow.task
        def clean(extract):
            return extract
        """,
    )
    assert main(["validate", "--order", "--flows", "flows"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "orders: extract -> clean -> load -> notify",
        "users: extract -> load",
    ]
    assert err == ""


@pytest.mark.slow
def test_validate_order_with_problems_prints_the_good_flows(
    cli: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(cli, "good.py", GOOD.format(name="good"))
    write(cli, "empty.py", "X = 1\n")
    assert main(["validate", "--order", "--flows", "flows"]) == 1
    out, err = capsys.readouterr()
    assert out == "good: extract -> load\n"
    assert err.splitlines() == ["flows/empty.py:1: defines no Flow", "1 problem(s) in flows"]


@pytest.mark.slow
def test_validate_checks_pools_from_the_config(
    cli: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "sluiceway.toml").write_text('flows = "flows"\n\n[pools]\nwarehouse = 2\n')
    source = write(
        cli,
        "etl.py",
        """\
        from runtime import Flow

        flow = Flow("etl")


        @flow.task(pool="warehouse")
        def load():
            return 1


        @flow.task(pool="lake")
        def archive():
            return 1
        """,
    )
    assert main(["validate"]) == 1
    _, err = capsys.readouterr()
    assert err.splitlines()[0] == (
        f"flows/etl.py:{line_of(source, 'def archive')}: task 'archive' uses pool 'lake', "
        "which is not sized in [pools] of the config (configured: warehouse)"
    )


def test_validate_missing_folder_exits_1(cli: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--flows", "nowhere"]) == 1
    _, err = capsys.readouterr()
    assert err.splitlines() == ["nowhere: flows folder not found", "1 problem(s) in nowhere"]
