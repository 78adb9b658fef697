"""The store's versioned migrations: applied in order, each once; later capabilities append."""

from __future__ import annotations

# Applied in order; the version table remembers how many ran. Never edit a shipped entry:
# append a new one (later issues add tables for triggers, alerts and the API).
MIGRATIONS: tuple[str, ...] = (
    # 1: the foundation's run history
    """
    CREATE TABLE flows (
        name        TEXT PRIMARY KEY,
        path        TEXT,
        source_hash TEXT,
        updated_at  TEXT NOT NULL
    );
    CREATE TABLE runs (
        id              INTEGER PRIMARY KEY,
        flow            TEXT NOT NULL,
        state           TEXT NOT NULL,
        params          TEXT NOT NULL DEFAULT '{}',
        trigger         TEXT NOT NULL DEFAULT '{"kind":"manual"}',
        logical_date    TEXT NOT NULL,
        idempotency_key TEXT,
        retry_of        INTEGER REFERENCES runs(id),
        source_hash     TEXT,
        created_at      TEXT NOT NULL,
        started_at      TEXT,
        ended_at        TEXT,
        error           TEXT,
        wait_reason     TEXT
    );
    -- one run per trigger instance: restarts and races never duplicate a run
    CREATE UNIQUE INDEX runs_idempotency ON runs(flow, idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    CREATE INDEX runs_by_flow ON runs(flow, id);
    CREATE INDEX runs_by_state ON runs(state, id);
    -- one row per task, and one per mapped instance (idx >= 0; the task itself has idx -1)
    CREATE TABLE tasks (
        run_id          INTEGER NOT NULL REFERENCES runs(id),
        name            TEXT NOT NULL,
        idx             INTEGER NOT NULL DEFAULT -1,
        state           TEXT NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0,
        started_at      TEXT,
        ended_at        TEXT,
        next_attempt_at TEXT,
        error           TEXT,
        reason          TEXT,
        result          BLOB,
        has_result      INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (run_id, name, idx)
    );
    CREATE TABLE attempts (
        run_id        INTEGER NOT NULL REFERENCES runs(id),
        name          TEXT NOT NULL,
        idx           INTEGER NOT NULL,
        attempt       INTEGER NOT NULL,
        state         TEXT NOT NULL,
        started_at    TEXT,
        ended_at      TEXT,
        error_type    TEXT,
        error_message TEXT,
        traceback     TEXT,
        PRIMARY KEY (run_id, name, idx, attempt)
    ) WITHOUT ROWID;
    CREATE TABLE logs (
        id      INTEGER PRIMARY KEY,
        run_id  INTEGER NOT NULL REFERENCES runs(id),
        name    TEXT,
        idx     INTEGER,
        attempt INTEGER,
        ts      TEXT NOT NULL,
        level   TEXT NOT NULL,
        message TEXT NOT NULL
    );
    CREATE INDEX logs_by_run ON logs(run_id, name, id);
    CREATE TABLE events (
        id      INTEGER PRIMARY KEY,
        ts      TEXT NOT NULL,
        kind    TEXT NOT NULL,
        run_id  INTEGER REFERENCES runs(id),
        task    TEXT,
        payload TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX events_by_run ON events(run_id, id);
    """,
    # 2: the service: process epochs (orphaned runs are found by epoch, not heartbeats),
    # schedule cursors, paused flows, cancel requests from other processes, SLA misses once
    """
    -- one row per process that ran flows (service, `sluiceway run`, backfill); with the boot
    -- id and the kernel's start time of the pid, "is that process still alive" is exact
    CREATE TABLE epochs (
        id         INTEGER PRIMARY KEY,
        pid        INTEGER NOT NULL,
        boot_id    TEXT,
        proc_start TEXT,
        started_at TEXT NOT NULL,
        stopped_at TEXT
    );
    ALTER TABLE runs ADD COLUMN epoch INTEGER REFERENCES epochs(id);
    ALTER TABLE runs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
    -- the last scheduled instant handled per (flow, trigger): catch-up is computed from it
    CREATE TABLE schedules (
        flow       TEXT NOT NULL,
        trigger    TEXT NOT NULL,
        cursor     TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (flow, trigger)
    );
    CREATE TABLE paused (
        flow      TEXT PRIMARY KEY,
        paused_at TEXT NOT NULL
    );
    -- an SLA miss is recorded once per run (and task), however often it is detected
    CREATE UNIQUE INDEX events_once ON events(run_id, kind, COALESCE(task, ''))
        WHERE kind = 'sla.missed';
    """,
    # 3: the run queue picks per flow: the oldest queued runs of each flow that can start are
    # found by index, without reading the backlog of flows that cannot (paused, at
    # max_active_runs, not loaded); such a flow's wait reason is stored once for the flow,
    # not once per queued run. Reasons the older service wrote on its queued runs go.
    """
    CREATE INDEX runs_queued ON runs(flow, id) WHERE state = 'queued';
    CREATE TABLE queue_waits (
        flow   TEXT PRIMARY KEY,
        reason TEXT NOT NULL
    );
    UPDATE runs SET wait_reason = NULL WHERE state = 'queued' AND epoch IS NULL;
    """,
    # 4: the flows the running service has loaded, with their params' defaults: `sluiceway
    # trigger` queues a run of such a flow while its file is broken or the folder is away
    # (the service runs its last good version)
    """
    CREATE TABLE served_flows (
        flow        TEXT PRIMARY KEY,
        params      TEXT NOT NULL,
        source_hash TEXT
    );
    """,
    # 5: an attempt a service shutdown stopped, or one a restart found left running, is
    # flagged interrupted: resuming reads the flag, not the error text (which was spelled two
    # ways). Attempts recorded before carry the flag their text meant.
    """
    ALTER TABLE attempts ADD COLUMN interrupted INTEGER NOT NULL DEFAULT 0;
    UPDATE attempts SET interrupted = 1
        WHERE error_type = 'InterruptedRunError'
        AND error_message IN ('interrupted by service shutdown', 'interrupted by service restart');
    """,
    # 6: file claims of files() triggers: one row per (flow, path, content) taken, committed in
    # the transaction that queues its run, so a file's content runs exactly once; what became
    # of the file after its run (moved, deleted, left, or why not) is recorded on the claim
    """
    CREATE TABLE file_claims (
        id           INTEGER PRIMARY KEY,
        flow         TEXT NOT NULL,
        trigger      TEXT NOT NULL,
        path         TEXT NOT NULL,
        size         INTEGER NOT NULL,
        mtime_ns     INTEGER NOT NULL,
        run_id       INTEGER REFERENCES runs(id),
        claimed_at   TEXT NOT NULL,
        settled_at   TEXT,
        outcome      TEXT,
        moved_to     TEXT,
        settle_error TEXT
    );
    -- the same content of the same path is claimed once, whatever sees it again
    CREATE UNIQUE INDEX file_claims_content ON file_claims(flow, path, size, mtime_ns);
    CREATE INDEX file_claims_by_run ON file_claims(run_id);
    -- claims whose file still waits for its run's end: start-up reconciles them by this index
    CREATE INDEX file_claims_unsettled ON file_claims(run_id) WHERE settled_at IS NULL;
    """,
    # 7: on_flow triggers: per (downstream flow, trigger key) the upstream run id up to which
    # every run of the upstream has ended and been handled (its downstream run queued, or it
    # did not match). Runs above it are looked at again; their downstream runs exist at most
    # once through the runs' unique (flow, idempotency_key) index.
    """
    CREATE TABLE upstream_cursors (
        flow       TEXT NOT NULL,
        trigger    TEXT NOT NULL,
        upstream   TEXT NOT NULL,
        cursor     INTEGER NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (flow, trigger)
    );
    """,
    # 8: data-quality checks: run.check(...) in a task and @flow.check(after=...) functions, one
    # row per check per attempt (a failed one also records a quality.failed event)
    """
    CREATE TABLE checks (
        id         INTEGER PRIMARY KEY,
        run_id     INTEGER NOT NULL REFERENCES runs(id),
        task       TEXT NOT NULL,
        idx        INTEGER NOT NULL,
        attempt    INTEGER NOT NULL,
        ts         TEXT NOT NULL,
        name       TEXT NOT NULL,
        passed     INTEGER NOT NULL,
        severity   TEXT NOT NULL,
        detail     TEXT
    );
    CREATE INDEX checks_by_run ON checks(run_id, id);
    """,
    # 9: the alert outbox: one row per alert and destination, written in the batch of the state
    # change that caused it; the sender delivers it (runtime/service/alerts.py). state: held
    # (in a digest window until next_at), pending (due at next_at), delivered, dead, grouped
    # (sent inside digest row digest_id). open: a failure a later success resolves.
    # next_at is unix seconds: ISO text without fixed width does not sort.
    """
    CREATE TABLE outbox (
        id           INTEGER PRIMARY KEY,
        created_at   TEXT NOT NULL,
        event        TEXT NOT NULL,
        kind         TEXT NOT NULL,
        flow         TEXT,
        run_id       INTEGER,
        task         TEXT,
        destination  TEXT NOT NULL,
        state        TEXT NOT NULL,
        attempts     INTEGER NOT NULL DEFAULT 0,
        next_at      REAL NOT NULL,
        last_error   TEXT,
        answer       TEXT,
        delivered_at TEXT,
        payload      TEXT NOT NULL,
        digest_id    INTEGER,
        open         INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX outbox_due ON outbox(state, next_at);
    CREATE INDEX outbox_open ON outbox(destination, flow) WHERE open = 1;
    """,
    # 10: full-text search over log lines (GET /api/logs/search), and the indexes the API's
    # retry and retention look runs up by. The FTS5 index of the messages has the logs table
    # as its content (nothing stored twice; snippet() reads the text from logs). The writer
    # indexes the lines above logs_fts_mark.upto with one INSERT ... SELECT per batch, in the
    # batch's transaction (INDEX_LOGS): a trigger per row cost 4x as much per line (measured
    # in bench/log_search.py). Lines are never updated; a deleted line that was indexed leaves
    # the index by trigger, and the mark never stays above the newest line, so an id SQLite
    # hands out again after the newest lines were deleted is indexed as new. 'rebuild'
    # indexes the lines of an existing history.
    """
    CREATE VIRTUAL TABLE logs_fts USING fts5(
        message,
        content = 'logs',
        content_rowid = 'id',
        tokenize = 'unicode61 remove_diacritics 2'
    );
    CREATE TABLE logs_fts_mark (upto INTEGER NOT NULL);
    INSERT INTO logs_fts (logs_fts) VALUES ('rebuild');
    INSERT INTO logs_fts_mark (upto) SELECT COALESCE(MAX(id), 0) FROM logs;
    CREATE TRIGGER logs_fts_delete AFTER DELETE ON logs BEGIN
        INSERT INTO logs_fts (logs_fts, rowid, message)
        SELECT 'delete', old.id, old.message WHERE old.id <= (SELECT upto FROM logs_fts_mark);
        UPDATE logs_fts_mark SET upto = COALESCE((SELECT MAX(id) FROM logs), 0)
        WHERE upto > COALESCE((SELECT MAX(id) FROM logs), 0);
    END;
    -- the runs that retry a run: a retry through the API refuses a second one while the
    -- first is queued or running, and retention keeps what a queued retry reuses
    CREATE INDEX runs_retry_of ON runs(retry_of) WHERE retry_of IS NOT NULL;
    -- retention ([history] retention) deletes a pruned run's delivered alerts by run
    CREATE INDEX outbox_by_run ON outbox(run_id) WHERE run_id IS NOT NULL;
    """,
    # 11: where an attempt ran: the Dask worker's address for a task with executor="dask"
    # (NULL: in the service's own process, the local executor)
    """
    ALTER TABLE attempts ADD COLUMN worker TEXT;
    """,
    # 12: security: the dashboard's login sessions. The cookie's secret id is stored only as
    # its sha256, so a copy of the database logs nobody in; expires is unix seconds (REAL).
    """
    CREATE TABLE sessions (
        id_hash    TEXT PRIMARY KEY,
        user       TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX sessions_by_expiry ON sessions(expires_at);
    """,
    # 13: the JSON API's reads (runtime/store/browse.py): a filtered page of runs is found by
    # an index seek per (flow, state) or (flow, trigger kind) pair, each read newest first and
    # stopped at the page size, never a scan of the history; a date range is turned into an
    # id range through the created_at / logical_date indexes; SLA misses of the last day by
    # (kind, ts) (a run's alerts by run_id: outbox_by_run, migration 10)
    """
    CREATE INDEX runs_by_flow_state ON runs(flow, state, id);
    CREATE INDEX runs_by_kind ON runs(json_extract(trigger, '$.kind'), id);
    CREATE INDEX runs_by_flow_kind ON runs(flow, json_extract(trigger, '$.kind'), id);
    CREATE INDEX runs_by_created ON runs(created_at);
    CREATE INDEX runs_by_logical ON runs(logical_date);
    CREATE INDEX events_by_kind ON events(kind, ts);
    """,
)
