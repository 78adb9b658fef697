"""A server-sent events reader over an aiohttp response, for the live stream's tests: parses
frames as a browser's EventSource does (``event:``, ``data:``, ``id:``, ``retry:``,
comments), and waits for events under a deadline."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import anyio
import orjson

from tests.waiting import WAIT


@dataclass(frozen=True, slots=True)
class Sse:
    """One frame: ``kind`` is the event name (``message`` by default), ``comment`` for a
    comment line, ``retry`` for a retry field; ``data`` parsed as JSON when it is."""

    kind: str
    data: Any = None
    id: str | None = None


class SseReader:
    """Frames of one open stream, in order."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.seen: list[Sse] = []
        self.ended = False

    async def next(self) -> Sse | None:
        """The next frame; ``None`` when the stream ended."""
        kind, event_id = "message", None
        data: list[str] = []
        while True:
            raw = await self.response.content.readline()
            if not raw:
                self.ended = True
                return None
            line = raw.decode().rstrip("\n")
            if not line:
                if data:
                    frame = Sse(kind, _json("\n".join(data)), event_id)
                    self.seen.append(frame)
                    return frame
                continue
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "":
                frame = Sse("comment", value)
                self.seen.append(frame)
                return frame
            if field == "retry":
                frame = Sse("retry", int(value))
                self.seen.append(frame)
                return frame
            if field == "event":
                kind = value
            elif field == "data":
                data.append(value)
            elif field == "id":
                event_id = value

    async def until(
        self, check: Callable[[Sse], bool], what: str, *, within: float = WAIT, new: bool = False
    ) -> Sse:
        """The first frame (seen already unless *new*, or read now) that passes *check*;
        fail after *within* seconds naming *what*."""
        for old in () if new else self.seen:
            if check(old):
                return old
        with anyio.move_on_after(within):
            while True:
                frame = await self.next()
                if frame is None:
                    raise AssertionError(
                        f"stream ended before {what}; last seen: {self.seen[-20:]}"
                    )
                if check(frame):
                    return frame
        raise AssertionError(
            f"timed out after {within:g}s waiting for {what}; last seen: {self.seen[-20:]}"
        )

    async def to_end(self, *, within: float = WAIT) -> list[Sse]:
        """Read until the stream ends; every frame seen."""
        with anyio.fail_after(within):
            while await self.next() is not None:
                pass
        return self.seen

    def events(self, kind: str) -> list[Any]:
        """The data of the frames of *kind* seen so far."""
        return [frame.data for frame in self.seen if frame.kind == kind]


def _json(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
