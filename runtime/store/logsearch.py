"""Full-text search over log lines (schema migration 10's FTS5 index): a user's words turned
into a safe MATCH expression, and the newest matching lines found in bounded steps."""

from __future__ import annotations

import re
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from runtime.errors import SluicewayError

# snippet() marks each match with these two control characters; a page escapes the text
# first, then turns them into <mark> and </mark>, so no markup from a log line gets through
MARK_START = "\x02"
MARK_END = "\x03"
ELLIPSIS = "\u2026"
SNIPPET_TOKENS = 16  # words of context around the matches
FIRST_STEP = 64  # candidate ids read by the first step of a filtered search
STEP = 4096  # the most candidate ids read per step, newest first
BUDGET = 0.1  # seconds one search may spend; then it answers with what it found and a cursor
MAX_TERMS = 32
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# a term: "a quoted phrase" (an unclosed quote runs to the end), or a run of non-space
_TERM = re.compile(r'"(?P<phrase>[^"]*)"?|(?P<word>[^\s"]+)')
_TASK_LABEL = re.compile(r"(?P<name>[^\[\]]+)(?:\[(?P<idx>\d+)\])?")
# what the unicode61 tokenizer keeps: letters, digits (and the private-use area)
_TOKEN_CHAR = re.compile(r"\w", re.UNICODE)


class SearchError(SluicewayError):
    """A search the user asked for cannot be made; names the parameter at fault."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


def fts_query(text: str) -> str:
    """The FTS5 MATCH expression for what a user typed: plain words, ``"quoted phrases"``
    and ``prefix*`` words, all of which must match (AND). Every term is quoted, so nothing
    the user types is FTS5 syntax (``AND``, ``NEAR``, ``:``, ``^``, parentheses are words);
    terms that hold no word character (``---``) match anything and are left out.

    :raises SearchError: (``q``) when no term is left, or there are too many
    """
    terms: list[str] = []
    for match in _TERM.finditer(text):
        phrase = match["phrase"]
        word = match["word"]
        prefix = False
        if phrase is None:
            assert word is not None
            prefix = word.endswith("*")
            phrase = word.rstrip("*")
        if not _TOKEN_CHAR.search(phrase):
            continue
        quoted = '"' + phrase.replace('"', '""') + '"'
        terms.append(quoted + "*" if prefix else quoted)
    if not terms:
        raise SearchError("q", f"q {text!r}: no word to search for (letters or digits)")
    if len(terms) > MAX_TERMS:
        raise SearchError("q", f"q has {len(terms)} terms; at most {MAX_TERMS}")
    return " ".join(terms)


def snippet_pieces(snippet: str) -> list[tuple[str, bool]]:
    """A hit's snippet as ``(text, is_match)`` pieces, for a template to escape each and wrap
    the matches in ``<mark>``: no HTML is built by hand."""
    pieces: list[tuple[str, bool]] = []
    for n, part in enumerate(snippet.split(MARK_START)):
        if n == 0:
            matched, rest = "", part
        else:
            matched, _, rest = part.partition(MARK_END)
        if matched:
            pieces.append((matched, True))
        if rest:
            pieces.append((rest, False))
    return pieces


def min_level(text: str) -> tuple[str, ...]:
    """The level names at or above *text* (``warning`` -> WARNING, ERROR, CRITICAL).

    :raises SearchError: (``level``) for an unknown level
    """
    name = text.strip().upper()
    if name == "WARN":
        name = "WARNING"
    if name not in LEVELS:
        raise SearchError("level", f"level {text!r}: expected one of {', '.join(LEVELS)}")
    return LEVELS[LEVELS.index(name) :]


@dataclass(frozen=True, slots=True)
class LogSearch:
    """One search: a MATCH expression (:func:`fts_query`) and filters; ``before`` is the
    cursor (only lines with a smaller id), ``limit`` the most hits to return."""

    match: str
    limit: int = 50
    before: int | None = None
    flow: str | None = None
    run: int | None = None
    task: str | None = None
    levels: tuple[str, ...] = ()
    since: str | None = None  # ISO 8601, compared as instants (julianday)
    until: str | None = None


def _filters(search: LogSearch) -> tuple[str, list[Any]]:
    """The WHERE clause over ``logs l`` and ``runs r`` for the search's filters."""
    sql: list[str] = []
    args: list[Any] = []
    if search.flow is not None:
        sql.append("r.flow = ?")
        args.append(search.flow)
    if search.run is not None:
        sql.append("l.run_id = ?")
        args.append(search.run)
    if search.task is not None:
        label = _TASK_LABEL.fullmatch(search.task)
        if label is None:
            raise SearchError("task", f"task {search.task!r}: expected NAME or NAME[INDEX]")
        sql.append("l.name = ?")
        args.append(label["name"])
        if label["idx"] is not None:
            sql.append("l.idx = ?")
            args.append(int(label["idx"]))
    if search.levels:
        sql.append(f"l.level IN ({', '.join('?' * len(search.levels))})")
        args.extend(search.levels)
    if search.since is not None:
        sql.append("julianday(l.ts) >= julianday(?)")
        args.append(search.since)
    if search.until is not None:
        sql.append("julianday(l.ts) < julianday(?)")
        args.append(search.until)
    return " AND ".join(sql) or "1", args


_HIT_COLUMNS = "l.id, l.run_id, r.flow, l.name, l.idx, l.ts, l.level, l.message"


def search_logs(
    conn: sqlite3.Connection, search: LogSearch, budget: float = BUDGET
) -> dict[str, Any]:
    """The newest lines matching *search*: ``{"hits": [...], "next_cursor"}``.

    One statement walks the index's matching ids newest first; they are read in steps
    (growing up to :data:`STEP`) and each step's lines filtered by one indexed join. The
    search ends when ``limit`` hits are found, the index is exhausted (``next_cursor`` is
    then ``None``), or *budget* seconds are spent: a selective filter over a common word
    then answers with fewer hits and a cursor to go on from, instead of scanning millions
    of lines in one request. A search within one run reads the index over the run's ids.

    :raises SearchError: (``q``) when SQLite refuses the expression
    """
    where, args = _filters(search)
    span = (0, 1 << 62)
    if search.run is not None:  # the index read over the run's id span only
        found = _run_span(conn, search.run)
        if found is None:
            return {"hits": [], "next_cursor": None}
        span = (found[0], found[1] + 1)
    try:
        hits, more = _by_index(conn, search, where, args, span, time.monotonic() + budget)
        _add_snippets(conn, search.match, hits, consecutive=not args)
    except sqlite3.OperationalError as exc:
        if "fts5" in str(exc) or "MATCH" in str(exc):
            raise SearchError("q", f"q cannot be searched: {exc}") from None
        raise
    return {"hits": hits, "next_cursor": more}


def _by_index(
    conn: sqlite3.Connection,
    search: LogSearch,
    where: str,
    args: list[Any],
    span: tuple[int, int],
    deadline: float,
) -> tuple[list[dict[str, Any]], str | None]:
    """Hits among the matching ids in ``[span[0], span[1])`` below the cursor."""
    hits: list[dict[str, Any]] = []
    before = span[1] if search.before is None else min(span[1], search.before)
    matching = conn.execute(
        "SELECT rowid FROM logs_fts WHERE logs_fts MATCH ? AND rowid >= ? AND rowid < ? "
        "ORDER BY rowid DESC",
        (search.match, span[0], before),
    )
    # without filters every id is a hit: one step; with them, steps grow as hits stay rare
    step = search.limit + 1 if not args else max(FIRST_STEP, 2 * search.limit)
    while True:
        ids = [row[0] for row in matching.fetchmany(step)]
        if not ids:
            return hits, None
        exhausted = len(ids) < step
        found = _lines(conn, ids, where, args)
        for row in found:
            hits.append(row)
            if len(hits) == search.limit:
                last = row is found[-1] and exhausted  # nothing older matches
                return hits, None if last else str(row["id"])
        if exhausted:
            return hits, None
        if time.monotonic() >= deadline:
            return hits, str(ids[-1])
        step = min(STEP, step * 4)


def _lines(
    conn: sqlite3.Connection, ids: list[int], where: str, args: list[Any]
) -> list[dict[str, Any]]:
    """The lines among *ids* that pass the filters, newest first (ids are in a temp table
    of one statement: a VALUES list joined by primary key)."""
    values = ",".join("(?)" for _ in ids)
    sql = (
        f"WITH ids(id) AS (VALUES {values}) SELECT {_HIT_COLUMNS} FROM ids "
        "CROSS JOIN logs l ON l.id = ids.id JOIN runs r ON r.id = l.run_id "
        f"WHERE {where} ORDER BY l.id DESC"
    )
    return [_hit(row) for row in conn.execute(sql, (*ids, *args))]


def _run_span(conn: sqlite3.Connection, run_id: int) -> tuple[int, int] | None:
    """The lowest and highest log id of run *run_id* (its lines lie between, with those of
    runs beside it); ``None`` when it has none."""
    low, high = conn.execute(
        "SELECT MIN(id), MAX(id) FROM logs INDEXED BY logs_by_run WHERE run_id = ?", (run_id,)
    ).fetchone()
    return None if low is None else (int(low), int(high))


def _hit(row: tuple[Any, ...]) -> dict[str, Any]:
    log_id, run_id, flow, name, idx, ts, level, message = row
    task = None if name is None else name if idx is None or idx < 0 else f"{name}[{idx}]"
    return {
        "id": log_id,
        "run_id": run_id,
        "flow": flow,
        "task": task,
        "ts": ts,
        "level": level,
        "message": message,
        "snippet": message,
    }


def _add_snippets(
    conn: sqlite3.Connection, match: str, hits: list[dict[str, Any]], *, consecutive: bool
) -> None:
    """Each hit's snippet: the matches marked with :data:`MARK_START` / :data:`MARK_END`,
    cut to about :data:`SNIPPET_TOKENS` words around them. *consecutive* hits (no filter)
    are every match in their id range: one range read; others one lookup by rowid each."""
    if not hits:
        return
    marks = (MARK_START, MARK_END, ELLIPSIS, SNIPPET_TOKENS, match)
    sql = "SELECT rowid, snippet(logs_fts, 0, ?, ?, ?, ?) FROM logs_fts WHERE logs_fts MATCH ? "
    by_id = {hit["id"]: hit for hit in hits}
    if consecutive:
        rows = conn.execute(
            sql + "AND rowid BETWEEN ? AND ?", (*marks, hits[-1]["id"], hits[0]["id"])
        ).fetchall()
    else:
        rows = [
            row
            for hit in hits
            for row in conn.execute(sql + "AND rowid = ?", (*marks, hit["id"])).fetchall()
        ]
    for rowid, snippet in rows:
        if rowid in by_id:
            by_id[rowid]["snippet"] = snippet
