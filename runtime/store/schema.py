"""The store's pragmas and statements; the versioned migrations are in migrations.py."""

from __future__ import annotations

from runtime.store.migrations import MIGRATIONS

SCHEMA_VERSION = len(MIGRATIONS)

# WAL lets readers (the CLI, the API) run beside the one writer. FULL fsyncs the WAL at every
# commit: with group commit that is one fsync per batch, so power loss cannot eat the last
# commits. busy_timeout covers the moments another process holds the write lock.
# busy_timeout comes first: switching to WAL needs a lock another process may hold.
BUSY_TIMEOUT = "PRAGMA busy_timeout=10000"
PRAGMAS: tuple[str, ...] = (
    BUSY_TIMEOUT,
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA foreign_keys=ON",
)
# a reader writes nothing: no journal mode switch (the writer made the file WAL), and
# query_only on top of the read-only open
READER_PRAGMAS: tuple[str, ...] = (
    "PRAGMA synchronous=FULL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA query_only=ON",
)
# the tables of the first migration: with a schema_version row, the marks of a Sluiceway file
FIRST_TABLES = frozenset({"flows", "runs", "tasks", "attempts", "logs", "events"})


def busy_timeout(seconds: float) -> str:
    return f"PRAGMA busy_timeout={max(0, round(seconds * 1000))}"


TERMINAL_TASK = "('succeeded','failed','upstream_failed','skipped','cancelled')"
TERMINAL_RUN = "('succeeded','failed','cancelled')"

# Coalesced upserts: only the newest state of a row within one batch is written. The WHERE
# clauses make terminal states final: once written, nothing overwrites them.
UPSERT_TASK = f"""
INSERT INTO tasks (run_id, name, idx, state, attempts, started_at, ended_at, next_attempt_at,
                   error, reason, result, has_result)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (run_id, name, idx) DO UPDATE SET
    state = excluded.state, attempts = excluded.attempts, started_at = excluded.started_at,
    ended_at = excluded.ended_at, next_attempt_at = excluded.next_attempt_at,
    error = excluded.error, reason = excluded.reason, result = excluded.result,
    has_result = excluded.has_result
WHERE tasks.state NOT IN {TERMINAL_TASK}
"""

UPSERT_ATTEMPT = f"""
INSERT INTO attempts (run_id, name, idx, attempt, state, started_at, ended_at, error_type,
                      error_message, traceback, interrupted, worker)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (run_id, name, idx, attempt) DO UPDATE SET
    state = excluded.state, started_at = excluded.started_at, ended_at = excluded.ended_at,
    error_type = excluded.error_type, error_message = excluded.error_message,
    traceback = excluded.traceback, interrupted = excluded.interrupted,
    worker = COALESCE(excluded.worker, attempts.worker)
WHERE attempts.state NOT IN {TERMINAL_TASK}
"""

# numbered parameters: a RunRow starts with the id (runtime.store.rows)
UPDATE_RUN = f"""
UPDATE runs SET state = ?2, started_at = COALESCE(?3, started_at), ended_at = ?4, error = ?5,
                wait_reason = ?6
WHERE id = ?1 AND state NOT IN {TERMINAL_RUN}
"""

INSERT_LOG = (
    "INSERT INTO logs (run_id, name, idx, attempt, ts, level, message) VALUES (?, ?, ?, ?, ?, ?, ?)"
)

# the lines not yet in the full-text index, indexed in the writer's batch that wrote them
INDEX_LOGS: tuple[str, ...] = (
    (
        "INSERT INTO logs_fts (rowid, message) "
        "SELECT id, message FROM logs WHERE id > (SELECT upto FROM logs_fts_mark)"
    ),
    "UPDATE logs_fts_mark SET upto = (SELECT COALESCE(MAX(id), upto) FROM logs)",
)

INSERT_CHECK = (
    "INSERT INTO checks (run_id, task, idx, attempt, ts, name, passed, severity, detail) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

INSERT_EVENT = (
    "INSERT OR IGNORE INTO events (ts, kind, run_id, task, payload) VALUES (?, ?, ?, ?, ?)"
)

INSERT_RUN = """
INSERT INTO runs (flow, state, params, trigger, logical_date, idempotency_key, retry_of,
                  source_hash, created_at, epoch)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT DO NOTHING
RETURNING id
"""

UPSERT_FLOW = """
INSERT INTO flows (name, path, source_hash, updated_at) VALUES (?, ?, ?, ?)
ON CONFLICT (name) DO UPDATE SET path = excluded.path, source_hash = excluded.source_hash,
    updated_at = excluded.updated_at
WHERE flows.source_hash IS NOT excluded.source_hash OR flows.path IS NOT excluded.path
"""

# A claim is inserted only when its content was never claimed; RETURNING says which were new.
INSERT_CLAIM = """
INSERT INTO file_claims (flow, trigger, path, size, mtime_ns, claimed_at)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT DO NOTHING
RETURNING id
"""

# a settled claim stays settled: a second settler (the service beside `run --file`) changes
# nothing
SETTLE_CLAIM = """
UPDATE file_claims SET settled_at = ?, outcome = ?, moved_to = ?, settle_error = ?
WHERE id = ? AND settled_at IS NULL
"""
