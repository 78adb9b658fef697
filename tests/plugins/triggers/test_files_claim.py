"""Claims: each content of a file once, its run queued in the same transaction; rewritten
content again; batches; storms in chunks; rescans answered from memory."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from plugins.triggers.files.claiming import Claimer
from plugins.triggers.files.watching import FileFacts
from runtime import codec
from runtime.errors import StoreError
from runtime.store import claims, migrations, open_store
from runtime.store.claims import FileKey
from tests.plugins.triggers.files_host import Host, make_flow, spec_of


def drop(
    folder: Path, name: str, text: str = "a,b\n1,2\n", mtime_ns: int | None = None
) -> FileFacts:
    """Write a file and return its facts, as the watcher would hand them over."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))
    st = path.stat()
    return FileFacts(path, st.st_size, st.st_mtime_ns)


def runs(db_path: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(db_path)
    try:
        rows = conn.execute(
            "SELECT id, flow, state, params, trigger, logical_date, idempotency_key, "
            "source_hash FROM runs ORDER BY id"
        ).fetchall()
    finally:
        conn.close()
    keys = ("id", "flow", "state", "params", "trigger", "logical_date", "key", "source_hash")
    out = [dict(zip(keys, row, strict=True)) for row in rows]
    for run in out:
        run["trigger"] = codec.loads(run["trigger"])
        run["params"] = codec.decode(run["params"])
    return out


def claim_rows(db_path: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db_path)
    try:
        return conn.execute(
            "SELECT path, size, mtime_ns, run_id FROM file_claims ORDER BY id"
        ).fetchall()
    finally:
        conn.close()


async def test_a_file_is_claimed_once_with_its_run(db_path: Path, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    facts = drop(inbox, "orders.csv", mtime_ns=1_767_000_000_123_456_789)
    flow = make_flow(region="eu")
    async with open_store(db_path) as store:
        host = Host(store, flow)
        claimer = Claimer(spec_of(inbox), host, host.reports.append)
        made = await claimer.offer([facts])
        again = await claimer.offer([facts, facts])  # a rescan, a duplicate event
        fresh = Claimer(spec_of(inbox), host, host.reports.append)  # a restart: empty memory
        after_restart = await fresh.offer([facts])
    assert len(made) == 1
    assert again == []
    assert after_restart == []
    (run,) = runs(db_path)
    assert run["state"] == "queued"
    assert run["flow"] == "ingest"
    assert run["trigger"] == {
        "kind": "file",
        "path": str(inbox / "orders.csv"),
        "size": facts.size,
        "mtime": "2025-12-29T09:20:00.123456Z",
    }
    assert run["params"] == {"region": "eu"}
    assert run["source_hash"] == flow.source_hash()
    assert run["logical_date"] == codec.iso(host.clock)  # the claim time
    assert claim_rows(db_path) == [(str(facts.path), facts.size, facts.mtime_ns, run["id"])]
    assert host.woken == 1
    assert host.reports == []


async def test_the_same_path_rewritten_is_claimed_again(db_path: Path, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    first = drop(inbox, "orders.csv", "v1\n", mtime_ns=1_000_000_000_000_000_000)
    second = drop(inbox, "orders.csv", "v2 longer\n", mtime_ns=1_000_000_001_000_000_000)
    async with open_store(db_path) as store:
        host = Host(store, make_flow())
        claimer = Claimer(spec_of(inbox), host, host.reports.append)
        await claimer.offer([first])
        await claimer.offer([second])
        await claimer.offer([first, second])  # both contents seen again: nothing new
    assert [r["trigger"]["size"] for r in runs(db_path)] == [3, 10]
    assert len(claim_rows(db_path)) == 2


async def test_a_batch_is_one_run_and_leaves_out_what_was_claimed(
    db_path: Path, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    files = [drop(inbox, f"f{i}.csv", f"{i}\n") for i in range(3)]
    async with open_store(db_path) as store:
        host = Host(store, make_flow())
        single = Claimer(spec_of(inbox), host, host.reports.append)
        await single.offer(files[:1])  # claimed by another trigger of the flow
        batcher = Claimer(spec_of(inbox, batch="5s"), host, host.reports.append)
        made = await batcher.offer(files)
        assert await batcher.offer(files) == []
    assert {c.run_id for c in made} == {2}
    assert len(made) == 2
    first, batch = runs(db_path)
    assert batch["trigger"] == {
        "kind": "file",
        "paths": [claims.file_record(FileKey(str(f.path), f.size, f.mtime_ns)) for f in files[1:]],
        "count": 2,
    }
    assert [row[3] for row in claim_rows(db_path)] == [first["id"], batch["id"], batch["id"]]


async def test_a_storm_is_claimed_in_chunks(db_path: Path, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    files = [drop(inbox, f"f{i:04}.csv", str(i)) for i in range(1200)]
    async with open_store(db_path) as store:
        host = Host(store, make_flow())
        claimer = Claimer(spec_of(inbox), host, host.reports.append, chunk=500)
        before = store.writer.batches
        made = await claimer.offer(files)
        transactions = store.writer.batches - before
        batches_after = store.writer.batches
        assert await claimer.offer(files) == []  # a rescan: answered from memory
        assert store.writer.batches == batches_after  # no write
    assert len(made) == 1200
    assert len({c.run_id for c in made}) == 1200
    assert transactions == 3  # 500 + 500 + 200, not 1200 transactions
    assert host.woken == 3  # the queue is woken after each commit
    assert len(runs(db_path)) == 1200


async def test_a_restart_reads_claims_instead_of_writing(db_path: Path, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    files = [drop(inbox, f"f{i}.csv", str(i)) for i in range(20)]
    async with open_store(db_path) as store:
        host = Host(store, make_flow())
        await Claimer(spec_of(inbox), host, host.reports.append).offer(files)
    async with open_store(db_path) as store:
        host = Host(store, make_flow())
        claimer = Claimer(spec_of(inbox), host, host.reports.append)
        before = store.writer.batches
        assert await claimer.offer(files) == []
        assert store.writer.batches == before
        assert len(claimer.known) == 20


async def test_claims_of_an_unloaded_flow_wait(db_path: Path, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    facts = drop(inbox, "a.csv")
    async with open_store(db_path) as store:
        host = Host(store)  # the flow went away in a reload racing the offer
        claimer = Claimer(spec_of(inbox), host, host.reports.append)
        assert await claimer.offer([facts]) == []
        host.flows["ingest"] = make_flow()
        assert len(await claimer.offer([facts])) == 1  # the next rescan claims it


async def test_a_store_failure_is_reported_and_claims_nothing(
    db_path: Path, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    facts = drop(inbox, "a.csv")
    async with open_store(db_path) as store:
        host = Host(store, make_flow())

        async def refuse(op: Any) -> Any:
            raise StoreError("disk full")

        claimer = Claimer(spec_of(inbox), host, host.reports.append)
        real = store.writer.submit
        store.writer.submit = refuse  # type: ignore[method-assign]
        assert await claimer.offer([facts]) == []
        store.writer.submit = real  # type: ignore[method-assign]
        assert claimer.known == {}  # not remembered: offered again, claimed then
        assert len(await claimer.offer([facts])) == 1
    assert len(host.reports) == 1
    assert "cannot claim 1 file(s)" in host.reports[0]
    assert "disk full" in host.reports[0]


async def test_the_claim_and_its_run_commit_together(db_path: Path, tmp_path: Path) -> None:
    # a run insert that fails rolls the claim back: the file is not taken without its run
    inbox = tmp_path / "inbox"
    facts = drop(inbox, "a.csv")
    async with open_store(db_path) as store:
        host = Host(store, make_flow())
        await store.writer.submit(
            lambda db: db.execute(
                "CREATE TRIGGER no_runs BEFORE INSERT ON runs BEGIN "
                "SELECT RAISE(ABORT, 'no runs today'); END"
            )
        )
        claimer = Claimer(spec_of(inbox), host, host.reports.append)
        assert await claimer.offer([facts]) == []
        assert claim_rows(db_path) == []
        assert runs(db_path) == []
        await store.writer.submit(lambda db: db.execute("DROP TRIGGER no_runs"))
        assert len(await claimer.offer([facts])) == 1
    assert len(claim_rows(db_path)) == 1
    assert len(runs(db_path)) == 1
    assert "no runs today" in host.reports[0]


def test_the_lookup_of_claims_searches_the_unique_index(db_path: Path) -> None:
    conn = sqlite3.connect(db_path)
    try:
        conn.executescript("\n".join(migrations.MIGRATIONS))
        keys = [FileKey(f"/in/{i}", i, i) for i in range(1000)]
        assert claims.claimed_among(conn, "ingest", keys) == set()
        plan = " ".join(
            str(row[3])
            for row in conn.execute(
                "EXPLAIN QUERY PLAN SELECT id FROM file_claims "
                "WHERE flow = ? AND path = ? AND size = ? AND mtime_ns = ?",
                ("a", "b", 1, 2),
            )
        )
    finally:
        conn.close()
    assert "file_claims_content" in plan


@pytest.mark.parametrize(
    ("mtime_ns", "iso"),
    [(0, "1970-01-01T00:00:00Z"), (1_500_000_000_999_999_999, "2017-07-14T02:40:00.999999Z")],
    ids=["epoch", "microseconds-kept"],
)
def test_mtime_is_iso_utc(mtime_ns: int, iso: str) -> None:
    assert claims.file_record(FileKey("/x", 1, mtime_ns))["mtime"] == iso


def test_folders_are_normalised_so_claims_name_files_one_way(tmp_path: Path) -> None:
    # the watcher's paths and `run --file`'s must be the same text: the claim is keyed by it
    spec = spec_of(tmp_path / "flows" / ".." / "inbox", on_success="move:done")  # base: flows/..
    assert spec.folder == tmp_path / "inbox"
    assert spec.on_success.folder == tmp_path / "done"
