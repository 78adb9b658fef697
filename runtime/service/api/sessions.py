"""The dashboard's login sessions: server-side, in SQLite and in memory, behind a signed
cookie; and the CSRF tokens derived from them.

A session is a random 256-bit id. The cookie carries the id and an HMAC of it; the database
keeps only the id's sha256 (a copy of the database logs nobody in), with who logged in and
when the session expires (``[api] session_ttl`` after the login, not extended by use). The
live sessions are loaded into memory when the API starts, so checking a cookie costs no
query; a login is committed before its cookie is handed out, a logout deletes the row.

The HMAC key is derived (HKDF-SHA256) from ``[api] token`` and ``[api] password_hash``:
sessions survive a restart, and changing the token or the password logs everybody out, with
no key file to keep safe. Under ``auth = "none"`` (no token, no sessions) the key is random
per process and signs only the anonymous CSRF tokens.

CSRF tokens are HMACs too: of the session id for a session, of a random *pre-session*
cookie (``sluiceway_csrf``) for the login form and for browsers under ``auth = "none"``.
Neither can be computed without a cookie the browser keeps HttpOnly and SameSite=Strict.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from runtime.clock import Clock
from runtime.service.api.listen import ApiSettings
from runtime.store import Store
from runtime.store import sessions as rows

log = logging.getLogger("sluiceway.runtime.api")

COOKIE = "sluiceway_session"
PRE_COOKIE = "sluiceway_csrf"  # the pre-session cookie: login form, auth = "none"
MAX_SESSIONS = 1000  # live sessions kept; past it the oldest is dropped
MAX_COOKIE = 200  # longer cookie values are not even looked at

Read = Callable[..., Awaitable[Any]]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def hkdf(secret: bytes, info: bytes, *, salt: bytes = b"sluiceway api v1") -> bytes:
    """HKDF-SHA256 (RFC 5869) of *secret* for *info*, 32 bytes (one block of expand)."""
    prk = hmac.new(salt, secret, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class Session:
    """One login: who (``token`` or ``password``: the secret used), until when (unix
    seconds), and its CSRF token."""

    id_hash: str
    user: str
    created_at: float
    expires_at: float
    csrf: str


class Sessions:
    """The live sessions of the API, their cookies and CSRF tokens.

    :param store: where sessions are written (through its writer)
    :param clock: what "now" is (a fake clock in tests)
    :param settings: the token and password the key derives from, the TTL
    """

    def __init__(self, store: Store, clock: Clock, settings: ApiSettings) -> None:
        self.store = store
        self.clock = clock
        self.ttl = settings.session_ttl
        if settings.token is None:
            self._key = secrets.token_bytes(32)
        else:
            password = settings.password.text if settings.password else ""
            self._key = hkdf(f"{settings.token}\0{password}".encode(), b"sessions")
        self._live: OrderedDict[str, Session] = OrderedDict()

    def _mac(self, purpose: bytes, value: str) -> str:
        return _b64(hmac.new(self._key, purpose + b"\0" + value.encode(), hashlib.sha256).digest())

    def _now(self) -> float:
        return self.clock.now().timestamp()

    # --- lifecycle ---

    async def load(self, read: Read) -> None:
        """Drop the expired sessions and load the live ones (when the API starts).

        :param read: runs a query function of the store in a thread (the API's reader)
        """
        now = self._now()
        self.store.writer.put_op(rows.drop_expired(now))
        for id_hash, user, created, expires in await read(rows.live_sessions, now):
            self._remember(Session(id_hash, user, created, expires, ""))
        if self._live:
            log.info("api: %d dashboard session(s) still valid", len(self._live))

    async def create(self, user: str) -> tuple[str, Session]:
        """A new session for *user*, committed; returns (the cookie value, the session)."""
        sid = secrets.token_urlsafe(32)
        now = self._now()
        session = Session(_id_hash(sid), user, now, now + self.ttl, self._mac(b"csrf", sid))
        await self.store.writer.submit(
            rows.add_session(session.id_hash, user, now, session.expires_at)
        )
        self._remember(session)
        return f"{sid}.{self._mac(b'session', sid)}", session

    def _remember(self, session: Session) -> None:
        self._live[session.id_hash] = session
        while len(self._live) > MAX_SESSIONS:
            oldest, _ = self._live.popitem(last=False)
            self.store.writer.put_op(rows.drop_session(oldest))

    def revoke(self, session: Session) -> None:
        """Log *session* out: it is forgotten now and deleted from the database."""
        self._live.pop(session.id_hash, None)
        self.store.writer.put_op(rows.drop_session(session.id_hash))

    def __len__(self) -> int:
        return len(self._live)

    # --- cookies ---

    def check(self, cookie: str | None) -> Session | None:
        """The live session of cookie value *cookie*; ``None`` for a missing, forged,
        tampered, logged-out or expired one."""
        if not cookie or len(cookie) > MAX_COOKIE:
            return None
        sid, _, mac = cookie.partition(".")
        if not sid or not hmac.compare_digest(mac, self._mac(b"session", sid)):
            return None
        session = self._live.get(_id_hash(sid))
        if session is None:
            return None
        if session.expires_at <= self._now():
            self.revoke(session)
            return None
        if not session.csrf:  # loaded from the database: the token is derived on first use
            session = Session(
                session.id_hash,
                session.user,
                session.created_at,
                session.expires_at,
                self._mac(b"csrf", sid),
            )
            self._live[session.id_hash] = session
        return session

    def max_age(self, session: Session) -> int:
        """Seconds the cookie of *session* should live in the browser."""
        return max(0, int(session.expires_at - self._now()))

    # --- the pre-session CSRF cookie ---

    @staticmethod
    def new_pre_session() -> str:
        """A fresh value for the pre-session cookie."""
        return secrets.token_urlsafe(24)

    def pre_session_csrf(self, cookie: str) -> str:
        """The CSRF token that goes with pre-session cookie value *cookie*."""
        return self._mac(b"pre-session csrf", cookie[:MAX_COOKIE])


def _id_hash(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()
