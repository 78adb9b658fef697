"""One client of the live stream (its filters and its bounded buffer) and the stream's limits."""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

END_WITHIN = 1.0  # seconds a stream may still write when the service stops


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """How the live stream behaves; the defaults are the service's (tests shorten them).

    :ivar queue: events buffered per client; one more and the client is dropped (resync)
    :ivar ping: seconds between ``: ping`` comments (keeps proxies and browsers attached, and
        finds clients that went away)
    :ivar runs_interval: seconds between polls for newly queued runs (sooner when this
        process queued one)
    :ivar log_interval: seconds between polls for new log lines of watched runs
    :ivar drop_after: seconds a dropped client's pending write may still take before its
        connection is cut
    :ivar batch: rows read per poll at most (new runs, log lines); a log tail reads this
        many lines per round, a round every ``coalesce`` seconds while it is behind, so a
        chatty run's tail lags rather than overflowing its clients; a client catching up on
        more than half its buffer is told to resync instead
    :ivar remember: runs whose latest frames are kept, for clients that connect later
    :ivar replay_window: seconds after its end a run's frames are still replayed
    :ivar coalesce: seconds a client's writer waits after the first new event, so that the
        events of a busy moment go out in one write (one system call per client, not one per
        event: with 50 clients that is what keeps the engine's pace)
    """

    queue: int = 1000
    ping: float = 15.0
    runs_interval: float = 1.0
    log_interval: float = 0.5
    drop_after: float = 5.0
    batch: int = 200
    coalesce: float = 0.05
    remember: int = 256
    replay_window: float = 10.0


@dataclass(eq=False, slots=True)
class Client:
    """One open stream: its filters, its bounded buffer, whether it fell behind.

    :ivar log_after: log lines with a greater id are sent (``None``: only lines written after
        it connected)
    """

    run: int | None
    flow: str | None
    send: MemoryObjectSendStream[bytes]
    receive: MemoryObjectReceiveStream[bytes]
    drop_after: float
    log_after: int | None = None
    dropped: bool = False
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)

    def offer(self, data: bytes) -> None:
        """Buffer *data* for the client, or drop the client when its buffer is full."""
        if self.dropped:
            return
        try:
            self.send.send_nowait(data)
        except anyio.WouldBlock:
            self.drop()
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass  # it left; the hub forgets it when its handler ends

    def drop(self) -> None:
        """Stop feeding the client: it gets what is buffered, then ``event: resync``. A write
        stuck on a client that does not read is cut after ``drop_after`` seconds."""
        if self.dropped:
            return
        self.dropped = True
        self.send.close()
        self.scope.deadline = min(self.scope.deadline, anyio.current_time() + self.drop_after)

    def end(self) -> None:
        """The service stops: end the stream once what is buffered is written, within a
        second even when the client does not read (the service's stop waits for no one)."""
        self.send.close()
        self.scope.deadline = min(self.scope.deadline, anyio.current_time() + END_WITHIN)
