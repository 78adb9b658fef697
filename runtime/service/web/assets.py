"""The dashboard's vendored files (CSS, JavaScript) read once into memory, and their
versioned URLs (``?v=`` the content's hash) that templates link to."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

FOLDER = Path(__file__).parent / "static"
TYPES = {
    ".css": "text/css",
    ".js": "text/javascript",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
}


@dataclass(frozen=True, slots=True)
class StaticFile:
    body: bytes
    content_type: str
    version: str  # the first 12 hex digits of the content's sha256


@functools.cache
def files() -> dict[str, StaticFile]:
    """Every file of :data:`FOLDER` by name (read once)."""
    out: dict[str, StaticFile] = {}
    for path in sorted(FOLDER.iterdir()):
        if path.is_file() and path.suffix in TYPES:
            body = path.read_bytes()
            version = hashlib.sha256(body).hexdigest()[:12]
            out[path.name] = StaticFile(body, TYPES[path.suffix], version)
    return out


def static_url(name: str) -> str:
    """The URL of static file *name*, with its version (templates call it ``static``).

    :raises KeyError: for a file that is not there (a template naming a missing file fails
        its tests, not a user's page)
    """
    return f"/static/{name}?v={files()[name].version}"
