"""Cold start: `sluiceway run` and `import runtime` as fresh processes, beside their floors."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from time import perf_counter

from report import Figure

from runtime.store.schema import PRAGMAS

FLOOR_SCRIPT = Path(__file__).with_name("floor.py")

FLOW_FILE = '''"""Five chained tasks: the flow the cold-start figure runs."""

from __future__ import annotations

from runtime import Flow

bench5 = Flow("bench5")


@bench5.task
async def extract() -> list[int]:
    return [1, 2, 3]


@bench5.task
async def clean(extract: list[int]) -> list[int]:
    return extract


@bench5.task
async def transform(clean: list[int]) -> int:
    return sum(clean)


@bench5.task
async def load(transform: int) -> int:
    return transform


@bench5.task
async def notify(load: int) -> None:
    return None
'''


def bench_env(cwd: Path) -> dict[str, str]:
    """The environment of a benched process: no SLUICEWAY_* (the default config), and a
    bytecode cache under *cwd*, as an installed copy has one; with PYTHONDONTWRITEBYTECODE set
    (as in some sandboxes) every start would compile runtime/."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICEWAY_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(cwd / "pycache")
    return env


def spawn(command: Callable[[], list[str]], trials: int, cwd: Path) -> float:
    """Median wall time in ms of a fresh process, after one untimed warm-up that fills the
    bytecode cache (see :func:`bench_env`)."""
    env = bench_env(cwd)
    times = []
    for i in range(trials + 1):
        argv = command()
        start = perf_counter()
        done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, check=False)
        took = perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"{argv} exited {done.returncode}: {done.stderr.decode()}")
        if i:
            times.append(took * 1000)
    return statistics.median(times)


def cold_start(tmp: Path, trials: int) -> list[Figure]:
    """A 5-task run by the console script (fresh --db each time), and the bare import."""
    flows = tmp / "cold_flows"
    flows.mkdir()
    (flows / "bench5.py").write_text(FLOW_FILE)
    py = sys.executable
    exe = str(Path(py).parent / "sluiceway")  # beside the venv's python, symlinks unresolved
    dbs = (str(tmp / f"cold-{i}.db") for i in range(10_000))

    def ours() -> list[str]:
        return [exe, "run", "bench5", "--flows", str(flows), "--db", next(dbs)]

    def base() -> list[str]:
        return [py, str(FLOOR_SCRIPT), next(dbs), *PRAGMAS]

    run_o, run_f = spawn(ours, trials, tmp), spawn(base, trials, tmp)
    imp_o = spawn(lambda: [py, "-c", "import runtime"], trials, tmp)
    imp_f = spawn(lambda: [py, "-c", "pass"], trials, tmp)
    label = "cold `sluiceway run`, 5 tasks"
    return [
        Figure("cold_run", label, "ms", run_o, run_f, "<= 500 ms", run_o <= 500),
        Figure(
            "cold_import", "cold `import runtime`", "ms", imp_o, imp_f, "<= 150 ms", imp_o <= 150
        ),
    ]
