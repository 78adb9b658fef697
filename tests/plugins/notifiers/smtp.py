"""A real SMTP server for the email notifier's tests: aiosmtpd on 127.0.0.1, plain, with
STARTTLS or with implicit TLS, its certificate from a throwaway trustme CA."""

from __future__ import annotations

import email
import email.policy
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

USER = "alerts"


@dataclass
class Delivered:
    """One message the server accepted."""

    sender: str
    recipients: list[str]
    message: EmailMessage
    tls: bool


@dataclass
class Mailbox:
    """What the server received; its ``password`` is the only one it accepts, and
    recipients starting with ``nobody@`` are refused with 550."""

    password: str
    delivered: list[Delivered] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address.startswith("nobody@"):
            return "550 5.1.1 no such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        implicit = server.transport.get_extra_info("ssl_object") is not None
        tls = session.ssl is not None or implicit
        self.delivered.append(Delivered(envelope.mail_from, list(envelope.rcpt_tos), parsed, tls))
        return "250 OK queued as 7F3A"

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        self.logins.append(data.login.decode())
        ok = data.login == USER.encode() and data.password == self.password.encode()
        return AuthResult(success=ok, handled=False)


@dataclass
class Certificates:
    """A trustme CA (its PEM at ``ca_file``) and a server context for 127.0.0.1."""

    ca_file: Path
    server: ssl.SSLContext


def certificates(folder: Path) -> Certificates:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server)
    ca_file = folder / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return Certificates(ca_file, server)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@contextmanager
def smtp_server(mailbox: Mailbox, mode: str, certs: Certificates) -> Iterator[int]:
    """Serve *mailbox* on 127.0.0.1 with *mode* ``"none"``, ``"starttls"`` (required, and
    AUTH only after it) or ``"implicit"``; yields the port."""
    options: dict[str, Any] = {"authenticator": mailbox.authenticate}
    if mode == "starttls":
        options |= {"tls_context": certs.server, "require_starttls": True}
    elif mode == "implicit":
        # aiosmtpd counts only STARTTLS as TLS for auth_require_tls; this link is TLS already
        options |= {"ssl_context": certs.server, "auth_require_tls": False}
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()
