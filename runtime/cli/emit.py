"""CLI: emit, sending an event to every flow with ``on_event(NAME)``: to the service's API when
``[api] bind`` is set (and it answers), else through the store, so it works without a server."""

from __future__ import annotations

import argparse
from functools import partial
from typing import Any

import anyio
import orjson

from runtime import codec
from runtime.cli.output import EXIT_FAILED, EXIT_OK, EXIT_USAGE, err, out
from runtime.clock import SystemClock
from runtime.config import Config
from runtime.errors import ParamError, UnknownEventError
from runtime.store.lock import service_running

TIMEOUT = 30.0  # seconds the whole request to the API may take


def cmd_emit(args: argparse.Namespace, config: Config) -> int:
    """``sluiceway emit NAME [--data JSON] [--key KEY] [--json]``: queue a run of every flow
    listening to event NAME; the runs' ids on stdout (``--json``: ``{"event", "runs"}`` as
    the API answers). Exit 2 for bad ``--data`` or when no flow listens."""
    payload = _payload(args.data)
    if args.key is not None and not args.key:
        raise ParamError("--key must not be empty")
    if config.api.bind is not None:
        sent = _through_api(config, args.name, payload, args.key)
        if isinstance(sent, int):
            return sent
        if sent is not None:
            return _report(args, sent, via="api")
    try:
        answer = _through_store(config, args.name, payload, args.key)
    except UnknownEventError as exc:
        err(f"sluiceway: {exc} in {config.flows}")
        return EXIT_USAGE
    return _report(args, answer, via="store")


def _payload(data: str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ParamError(f"--data {data[:80]!r}: not valid JSON: {exc}") from None


def _report(args: argparse.Namespace, answer: dict[str, Any], *, via: str) -> int:
    runs: list[dict[str, Any]] = answer["runs"]
    if args.json:
        out(codec.pretty({"event": answer["event"], "runs": runs}))
    else:
        for run in runs:
            out(str(run["id"]))
    existed = set(answer.get("existed", ()))
    for run in runs:
        if run["id"] in existed:
            err(f"run {run['id']} of {run['flow']} already exists for key {args.key!r}")
        else:
            err(f"queued run {run['id']} of {run['flow']} ({run['state']})")
    return EXIT_OK


# --- through the store ---


def _through_store(config: Config, name: str, payload: Any, key: str | None) -> dict[str, Any]:
    """Load the flows folder, queue the runs in the store; ``{"event", "runs", "existed"}``.

    :raises UnknownEventError: when no flow in the folder listens to *name*
    """
    from runtime.define.loader import load_flows
    from runtime.store import open_store
    from runtime.store.incoming import listeners, queue_event, run_objects

    loaded = load_flows(config.flows, config.pools, executors=config.executors)
    for problem in loaded.problems:
        err(f"warning: {problem}")
    if not listeners(loaded.flows, name):
        raise UnknownEventError(name)
    now = SystemClock().now()

    async def queue() -> dict[str, Any]:
        async with open_store(config.db, interval=config.flush_interval) as store:
            queued = await queue_event(store, loaded.flows, name, payload, key=key, now=now)
            runs = await run_objects(partial(store.read, flush=False), queued)
        existed = [item.run_id for item in queued if not item.created]
        return {"event": name, "runs": runs, "existed": existed}

    answer = anyio.run(queue)
    if not service_running(config.db):
        err(
            f"note: no service is running on {config.db}: the runs wait queued until "
            "`sluiceway serve` starts"
        )
    return answer


# --- through the API ---


def api_url(bind: str) -> str:
    """The base URL to reach a server bound to *bind* from this machine (a wildcard bind is
    reached on the loopback address)."""
    from runtime.service.api.listen import split_bind

    host, port = split_bind(bind)
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _through_api(
    config: Config, name: str, payload: Any, key: str | None
) -> dict[str, Any] | int | None:
    """POST the event to the service's API: its answer, an exit code after printing why it
    was refused, or ``None`` when nothing answers there (the caller uses the store)."""
    import aiohttp

    assert config.api.bind is not None
    url = f"{api_url(config.api.bind)}/api/events/{name}"
    headers = {"Content-Type": "application/json"}
    token = _token(config)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    params = {"idempotency_key": key} if key is not None else {}

    async def post() -> tuple[int, bytes]:
        timeout = aiohttp.ClientTimeout(total=TIMEOUT)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(url, data=orjson.dumps(payload), headers=headers, params=params) as resp,
        ):
            return resp.status, await resp.read()

    try:
        status, body = anyio.run(post)
    except aiohttp.ClientConnectionError as exc:
        err(
            f"note: the API at {url} does not answer ({type(exc).__name__}); "
            "queueing through the store"
        )
        return None
    except TimeoutError:
        err(f"sluiceway: the API at {url} did not answer within {TIMEOUT:g}s")
        return EXIT_FAILED
    return _answer(url, status, body)


def _token(config: Config) -> str | None:
    """``[api] token``, or the one the service generated for a loopback bind without one."""
    if config.api.auth == "none":
        return None
    if config.api.token:
        return config.api.token
    from runtime.service.api.listen import token_file

    path = token_file(config.db)
    try:
        return path.read_text().strip() or None
    except OSError:  # none generated (yet): the API answers 401 and says so
        return None


def _answer(url: str, status: int, body: bytes) -> dict[str, Any] | int:
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        answer = None
    if status in (200, 201) and isinstance(answer, dict) and "runs" in answer:
        if status == 200:  # every run existed already (the same key)
            answer["existed"] = [run["id"] for run in answer["runs"]]
        return answer
    error = answer.get("error") if isinstance(answer, dict) else None
    message = str(error.get("message")) if isinstance(error, dict) else f"HTTP {status}"
    if status == 401:
        message += " (the token is [api] token or SLUICEWAY_API_TOKEN)"
    err(f"sluiceway: {url}: {status}: {message}")
    return EXIT_USAGE if status in (400, 404, 413) else EXIT_FAILED
