"""The alert sender: delivers outbox rows through their notifiers, one lane per destination.

Each destination is a lane: its rows go out in order (a recovery never overtakes the failure
it resolves), one at a time, under ``alert_timeout``; lanes run concurrently in the sender's
own task group, so a hanging endpoint delays only its own lane, never runs or other
destinations. A failed try is retried with exponential backoff and jitter (or after the
endpoint's ``Retry-After``) until ``alert_retries`` tries, then dead-lettered; a
``permanent`` failure is dead-lettered at once. A row is marked delivered only after its
notifier returned.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping

import anyio
from anyio.abc import TaskGroup, TaskStatus

from runtime.abc import DeliveryError, Notifier
from runtime.clock import Clock
from runtime.errors import StoreError
from runtime.redact import redact
from runtime.store import Store, outbox
from runtime.store.outbox import Delivery

log = logging.getLogger("sluiceway.runtime.service.delivery")

__all__ = ["BACKOFF_FIRST", "BACKOFF_MAX", "Sender"]

BACKOFF_FIRST = 1.0
"""Seconds before the second try; doubled for each further one (with jitter)."""
BACKOFF_MAX = 600.0
"""The longest wait between two tries, ``Retry-After`` included."""
POLL = 5.0
"""The backstop: the sender looks at the outbox at least this often (it is woken by every
alert queued, so this matters only for rows written by another process)."""


class Sender:
    """Delivers due outbox rows until cancelled; :meth:`wake` when rows were queued.

    :param notifiers: the current notifier instances by destination (a reload swaps them)
    :param settle: how long to let a just-queued row's batch commit before reading
    """

    def __init__(
        self,
        store: Store,
        clock: Clock,
        notifiers: Callable[[], Mapping[str, Notifier]],
        *,
        retries: int,
        timeout: float,
        settle: float = 0.05,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.notifiers = notifiers
        self.retries = retries
        self.timeout = timeout
        self.settle = settle
        self.rng = rng or random.Random()
        self.backoff_first = BACKOFF_FIRST
        self._wake = anyio.Event()
        self._busy: set[str] = set()
        self._next: float | None = None  # unix seconds of the next row that becomes due
        self.idle = anyio.Event()  # set when nothing is due now and no lane is busy
        self.delivered = 0

    def wake(self) -> None:
        """Rows were queued (or a lane finished): look at the outbox now."""
        self._wake.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Deliver until cancelled; started() at once (a restart's backlog is sent first)."""
        async with anyio.create_task_group() as lanes:
            task_status.started()
            while True:
                self._wake = anyio.Event()
                try:
                    await self._cycle(lanes)
                except Exception:  # a locked or failing store: alerts wait, the service goes on
                    log.exception("alerts: reading the outbox failed; trying again in %gs", POLL)
                    self._next = None
                wait = POLL
                if self._next is not None:
                    wait = max(0.0, min(wait, self._next - self.clock.now().timestamp()))
                with anyio.move_on_after(wait):
                    await self._wake.wait()
                await anyio.sleep(self.settle)  # let the batch of what woke us commit

    async def drain(self, within: float) -> None:
        """Deliver what is due now, for up to *within* seconds (the service is stopping)."""
        with anyio.move_on_after(within):
            self.idle = anyio.Event()
            self.wake()
            await self.idle.wait()

    async def _cycle(self, lanes: TaskGroup) -> None:
        if self._busy and self._busy >= set(self.notifiers()):
            return  # every lane is busy (a hanging endpoint): reading would only force commits
        now = self.clock.now().timestamp()
        held = await self.store.read(outbox.waiting)
        if held is not None and held <= now:
            await self.store.writer.submit(lambda db: outbox.close_windows(db, now))
            held = None
        rows = await self.store.read(outbox.due)
        ready: dict[str, list[Delivery]] = {}
        blocked: set[str] = set()
        upcoming = [held] if held is not None else []
        for row in rows:
            dest = row.destination
            if dest in self._busy or dest in blocked:
                continue
            if row.next_at > now:  # backing off: the rows behind it wait their turn
                blocked.add(dest)
                upcoming.append(row.next_at)
                continue
            ready.setdefault(dest, []).append(row)
        self._next = min(upcoming, default=None)
        for dest, queued in ready.items():
            self._busy.add(dest)
            lanes.start_soon(self._lane, dest, queued, name=f"alerts {dest}")
        if not self._busy:
            self.idle.set()

    async def _lane(self, dest: str, rows: list[Delivery]) -> None:
        try:
            for row in rows:
                if not await self._deliver(row):
                    break  # backing off: the rest keep their order behind it
        finally:
            self._busy.discard(dest)
            self.wake()

    async def _deliver(self, row: Delivery) -> bool:
        """Try *row* once and record the outcome; False when it is to be tried again."""
        notifier = self.notifiers().get(row.destination)
        retry_after: float | None = None
        permanent = False
        if notifier is None:
            error = f"destination {row.destination!r} is not configured any more"
            permanent = True
        else:
            try:
                with anyio.fail_after(self.timeout):
                    answer = await notifier.send(row.alert())
            except anyio.get_cancelled_exc_class():
                raise
            except DeliveryError as exc:
                error, retry_after, permanent = str(exc), exc.retry_after, exc.permanent
            except TimeoutError:
                error = f"no answer within {self.timeout:g}s"
            except BaseException as exc:  # noqa: BLE001 - a notifier never stops the sender
                error = f"{type(exc).__name__}: {exc}"
            else:
                self._record(row, "delivered", answer=str(answer))
                self.delivered += 1
                log.info(
                    "alert=%s %s to %s delivered: %s",
                    row.id,
                    row.event,
                    row.destination,
                    redact(str(answer)),
                )
                return True
        return self._failed(row, redact(error), retry_after, permanent)

    def _failed(
        self, row: Delivery, error: str, retry_after: float | None, permanent: bool
    ) -> bool:
        tries = row.attempts + 1
        if permanent or tries >= self.retries:
            why = "permanent failure" if permanent else f"{tries} tries"
            log.error(
                "alert=%s %s to %s dead-lettered after %s: %s (sluiceway alerts resend %s)",
                row.id,
                row.event,
                row.destination,
                why,
                error,
                row.id,
            )
            self._record(row, "dead", error=error)
            return True
        if retry_after is not None and retry_after >= 0:
            delay = min(retry_after, BACKOFF_MAX)
        else:
            full = min(BACKOFF_MAX, self.backoff_first * 2 ** (tries - 1))
            delay = full / 2 + self.rng.uniform(0, full / 2)  # jitter: retries do not align
        log.warning(
            "alert=%s %s to %s try %d of %d failed: %s; next try in %.1fs",
            row.id,
            row.event,
            row.destination,
            tries,
            self.retries,
            error,
            delay,
        )
        self._record(row, "pending", error=error, next_at=self.clock.now().timestamp() + delay)
        return False

    def _record(
        self,
        row: Delivery,
        state: str,
        *,
        answer: str | None = None,
        error: str | None = None,
        next_at: float | None = None,
    ) -> None:
        """Queue the mark (not awaited: it is committed even when the sender is cancelled
        right after; the next read flushes it first)."""
        now = self.clock.now()
        try:
            self.store.writer.put_op(
                lambda db: outbox.mark(
                    db, row.id, state=state, now=now, answer=answer, error=error, next_at=next_at
                )
            )
        except StoreError:  # closed: the row stays as it was and is tried again next start
            log.warning("alert=%s %s: not recorded, the store is closed", row.id, state)
