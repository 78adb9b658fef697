"""Registered secrets are masked in text and in every log record, tracebacks included."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime import redact
from runtime.config import configure_logging, load_config

HOOK = "https://hooks.slack.com/services/T0001/B0002/abcdefSECRET"


@pytest.fixture(autouse=True)
def fresh() -> Iterator[None]:
    redact.forget_all()
    yield
    redact.forget_all()


def test_a_registered_url_is_masked_whole_and_by_its_path() -> None:
    redact.register([HOOK, None, "abc"])
    assert redact.redact(f"POST {HOOK} failed") == "POST *** failed"
    assert redact.redact("POST /services/T0001/B0002/abcdefSECRET: 500") == "POST ***: 500"
    assert redact.redact("short abc stays") == "short abc stays"  # too short to register


def test_a_password_in_a_url_and_a_query_token_are_masked() -> None:
    redact.register(["smtp://user:hunter2222@mail.example:587", "https://x.example/h?key=k1k2k3k4"])
    assert "hunter2222" not in redact.redact("login hunter2222 refused")
    assert redact.redact("GET ?key=k1k2k3k4") == "GET ?***"


def test_log_records_and_tracebacks_are_masked(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    logger = logging.getLogger("sluiceway.test.redact")
    configure_logging("INFO")
    try:
        redact.register([HOOK])
        logger.error("delivery to %s failed", HOOK)
        try:
            raise ConnectionError(f"cannot reach {HOOK}")
        except ConnectionError:
            logger.exception("sender crashed")
    finally:
        logging.getLogger("sluiceway").handlers[:] = []
    err = capsys.readouterr().err
    assert "abcdefSECRET" not in err
    assert "delivery to *** failed" in err
    assert "ConnectionError: cannot reach ***" in err


def test_the_api_token_is_registered_when_the_config_is_read(tmp_path: Path) -> None:
    load_config(env={"SLUICEWAY_API_TOKEN": "tok-123456789"}, cwd=tmp_path)
    assert redact.redact("Bearer tok-123456789") == "Bearer ***"
