"""Full-text search over log lines: the query language, the FTS5 index kept by triggers
(and built by the migration for an existing history), filters, keyset pages, the budget."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime.store import migrations, schema
from runtime.store.logsearch import (
    LogSearch,
    SearchError,
    fts_query,
    min_level,
    search_logs,
    snippet_pieces,
)


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("timeout", '"timeout"'),
        ("connection refused", '"connection" "refused"'),
        ('"connection refused" db', '"connection refused" "db"'),
        ("load*", '"load"*'),
        ("NEAR(a b) OR c:d ^e", '"NEAR(a" "b)" "OR" "c:d" "^e"'),
        ('unclosed "phrase here', '"unclosed" "phrase here"'),
        ("--- ok", '"ok"'),
        ('say "it""s"', '"say" "it" "s"'),
    ],
    ids=["word", "words", "phrase", "prefix", "fts-syntax", "unclosed", "no-word", "quotes"],
)
def test_what_a_user_types_becomes_quoted_terms(typed: str, expected: str) -> None:
    assert fts_query(typed) == expected


@pytest.mark.parametrize("typed", ["", "   ", "---", '""', "* *"])
def test_a_query_without_a_word_is_refused_naming_q(typed: str) -> None:
    with pytest.raises(SearchError) as caught:
        fts_query(typed)
    assert caught.value.field == "q"


def test_levels_are_that_level_and_above() -> None:
    assert min_level("warning") == ("WARNING", "ERROR", "CRITICAL")
    assert min_level("WARN") == ("WARNING", "ERROR", "CRITICAL")
    with pytest.raises(SearchError, match="level 'loud'"):
        min_level("loud")


def _migrate(conn: sqlite3.Connection, upto: int) -> None:
    for script in migrations.MIGRATIONS[:upto]:
        conn.executescript(script)


LINES = [
    # run, flow, task, idx, level, message
    (1, "etl", "extract", -1, "INFO", "loaded 300 rows from db.example.com"),
    (1, "etl", "load", -1, "ERROR", "error: connection refused by warehouse"),
    (2, "report", "build", -1, "INFO", "Café report built"),
    (2, "report", "build", -1, "WARNING", "connection slow, retrying"),
    (3, "etl", "load", 3, "ERROR", "error: connection refused again"),
]


def _fill(
    conn: sqlite3.Connection,
    lines: list[tuple[int, str, str, int, str, str]],
    *,
    index: bool = True,
) -> None:
    for run, flow in sorted({(line[0], line[1]) for line in lines}):
        conn.execute(
            "INSERT OR IGNORE INTO runs (id, flow, state, logical_date, created_at) "
            "VALUES (?, ?, 'failed', '2026-11-30T00:00:00Z', '2026-11-30T00:00:00Z')",
            (run, flow),
        )
    conn.executemany(
        "INSERT INTO logs (run_id, name, idx, attempt, ts, level, message) "
        "VALUES (?, ?, ?, 1, ?, ?, ?)",
        [
            (run, task, idx, f"2026-11-30T08:0{n}:00Z", level, message)
            for n, (run, _, task, idx, level, message) in enumerate(lines)
        ],
    )
    for sql in schema.INDEX_LOGS if index else ():  # as the writer's batch does
        conn.execute(sql)


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(tmp_path / "h.db", isolation_level=None)
    _migrate(conn, len(migrations.MIGRATIONS))
    _fill(conn, LINES)
    yield conn
    conn.close()


def ids(found: dict[str, Any]) -> list[int]:
    hits = found["hits"]
    assert isinstance(hits, list)
    return [hit["id"] for hit in hits]


def test_hits_come_newest_first_with_marked_snippets(conn: sqlite3.Connection) -> None:
    found = search_logs(conn, LogSearch(fts_query("connection")))
    assert ids(found) == [5, 4, 2]
    assert found["next_cursor"] is None
    first = found["hits"][0]
    assert first == {
        "id": 5,
        "run_id": 3,
        "flow": "etl",
        "task": "load[3]",
        "ts": "2026-11-30T08:04:00Z",
        "level": "ERROR",
        "message": "error: connection refused again",
        "snippet": "error: \x02connection\x03 refused again",
    }


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (LogSearch('"connection refused"'), [5, 2]),
        (LogSearch('"cafe"'), [3]),  # diacritics folded
        (LogSearch('"retry"*'), [4]),
        (LogSearch('"connection"', flow="etl"), [5, 2]),
        (LogSearch('"connection"', run=1), [2]),
        (LogSearch('"connection"', task="load"), [5, 2]),
        (LogSearch('"connection"', task="load[3]"), [5]),
        (LogSearch('"connection"', levels=("WARNING", "ERROR", "CRITICAL")), [5, 4, 2]),
        (LogSearch('"connection"', levels=("ERROR", "CRITICAL")), [5, 2]),
        (LogSearch('"connection"', since="2026-11-30T08:02:00Z"), [5, 4]),
        (LogSearch('"connection"', until="2026-11-30T08:03:00Z"), [2]),
        (LogSearch('"connection"', run=1, task="extract"), []),
    ],
    ids=[
        "phrase", "diacritics", "prefix", "flow", "run", "task", "instance", "warning-up",
        "error-up", "since", "until", "nothing",
    ],
)  # fmt: skip
def test_filters(conn: sqlite3.Connection, query: LogSearch, expected: list[int]) -> None:
    assert ids(search_logs(conn, query)) == expected


@pytest.mark.parametrize("run", [None, 1, 3], ids=["index", "run-1", "run-3"])
def test_pages_follow_the_cursor_without_gaps_or_repeats(
    conn: sqlite3.Connection, run: int | None
) -> None:
    _fill(conn, [(run or 1, "etl", "load", -1, "INFO", f"page line {n}") for n in range(7)])
    seen: list[int] = []
    cursor: int | None = None
    while True:
        found = search_logs(conn, LogSearch('"page"', limit=3, before=cursor, run=run))
        seen += ids(found)
        if found["next_cursor"] is None:
            break
        cursor = int(str(found["next_cursor"]))
    assert seen == sorted(seen, reverse=True)
    assert len(seen) == len(set(seen)) == 7


def test_a_search_out_of_budget_answers_with_a_cursor_to_go_on(
    conn: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("runtime.store.logsearch.FIRST_STEP", 2)
    monkeypatch.setattr("runtime.store.logsearch.STEP", 2)
    _fill(conn, [(1, "etl", "load", -1, "INFO", f"common {n}") for n in range(9)])
    _fill(conn, [(9, "rare", "t", -1, "INFO", "common rare")])  # the newest
    found = search_logs(conn, LogSearch('"common"', flow="nothing-here", limit=1), budget=0.0)
    assert ids(found) == []
    assert found["next_cursor"] is not None  # one step, then the budget stopped it
    everything = search_logs(conn, LogSearch('"common"', flow="nothing-here"))
    assert everything == {"hits": [], "next_cursor": None}


def test_deleted_lines_leave_the_index(conn: sqlite3.Connection) -> None:
    conn.execute("DELETE FROM logs WHERE run_id = 1")
    assert ids(search_logs(conn, LogSearch('"connection"'))) == [5, 4]
    conn.execute("INSERT INTO logs_fts (logs_fts) VALUES ('integrity-check')")


def test_lines_are_searchable_once_indexed_and_a_reused_id_is_indexed_again(
    conn: sqlite3.Connection,
) -> None:
    conn.execute(
        "INSERT INTO logs (run_id, name, idx, attempt, ts, level, message) "
        "VALUES (1, 'load', -1, 1, '2026-11-30T09:00:00Z', 'INFO', 'fresh words')"
    )
    assert ids(search_logs(conn, LogSearch('"fresh"'))) == []  # not indexed yet
    conn.execute("DELETE FROM logs WHERE id >= 5")  # the newest indexed one, and the new one
    conn.execute(
        "INSERT INTO logs (run_id, name, idx, attempt, ts, level, message) "
        "VALUES (1, 'load', -1, 1, '2026-11-30T09:00:00Z', 'INFO', 'fresh again')"
    )
    (reused,) = conn.execute("SELECT max(id) FROM logs").fetchone()
    assert reused == 5  # SQLite hands the id out again
    for sql in schema.INDEX_LOGS:
        conn.execute(sql)
    assert ids(search_logs(conn, LogSearch('"fresh"'))) == [5]
    assert ids(search_logs(conn, LogSearch('"connection"'))) == [4, 2]
    conn.execute("INSERT INTO logs_fts (logs_fts) VALUES ('integrity-check')")


def test_the_migration_indexes_the_lines_of_an_existing_history(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    number = next(n for n, s in enumerate(migrations.MIGRATIONS) if "logs_fts" in s)
    _migrate(conn, number)  # the history as it was before
    _fill(conn, LINES, index=False)
    for script in migrations.MIGRATIONS[number:]:
        conn.executescript(script)
    assert ids(search_logs(conn, LogSearch('"refused"'))) == [5, 2]
    conn.execute("INSERT INTO logs_fts (logs_fts) VALUES ('integrity-check')")
    conn.close()


@pytest.mark.parametrize(
    ("snippet", "pieces"),
    [
        ("plain", [("plain", False)]),
        ("\x02error\x03: refused", [("error", True), (": refused", False)]),
        ("a \x02b\x03 c \x02d\x03", [("a ", False), ("b", True), (" c ", False), ("d", True)]),
        ("<b>\x02x\x03</b>", [("<b>", False), ("x", True), ("</b>", False)]),
    ],
    ids=["plain", "leading", "two", "markup-stays-text"],
)
def test_snippet_pieces(snippet: str, pieces: list[tuple[str, bool]]) -> None:
    assert snippet_pieces(snippet) == pieces
