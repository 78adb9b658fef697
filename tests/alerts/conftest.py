"""Fixtures of the alert tests: a local endpoint, and secrets forgotten after each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from runtime import redact
from tests.alerts.endpoint import Endpoint, running_endpoint

CANARY = "canary-al3rt-5ecret-7c1d"
"""Planted in webhook URLs and HMAC secrets; searched for in every output."""


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    with running_endpoint() as server:
        yield server


@pytest.fixture(autouse=True)
def _forget_secrets() -> Iterator[None]:
    yield
    redact.forget_all()
