"""TriggerInfo, what a task reads as ``run.trigger``: attribute and mapping access to the same
fields, and an unknown field is an error that says what the trigger has."""

from __future__ import annotations

import copy
import logging
import pickle
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from runtime.define.context import Run, TriggerInfo

SCHEDULED = {"kind": "schedule", "spec": "every('1h')", "scheduled": "2026-01-01T06:00:00Z"}


def test_fields_read_as_attributes_and_as_keys() -> None:
    info = TriggerInfo(SCHEDULED)
    assert info.kind == info["kind"] == "schedule"
    assert info.spec == info["spec"] == "every('1h')"
    assert info.scheduled == info["scheduled"] == "2026-01-01T06:00:00Z"


def test_it_is_a_read_only_mapping_of_its_fields() -> None:
    info = TriggerInfo(SCHEDULED)
    assert isinstance(info, Mapping)
    assert list(info) == ["kind", "spec", "scheduled"]  # in the order given
    assert len(info) == 3
    assert dict(info) == SCHEDULED
    assert info == SCHEDULED
    assert "spec" in info
    assert "path" not in info
    assert info.get("path") is None
    assert info.get("path", "none") == "none"
    with pytest.raises(KeyError):
        info["path"]
    with pytest.raises(TypeError):
        info["kind"] = "manual"  # no item assignment: a mapping to read


def test_it_keeps_a_copy_of_the_fields_it_was_given() -> None:
    data: dict[str, Any] = dict(SCHEDULED)
    info = TriggerInfo(data)
    data["kind"] = "manual"
    data["extra"] = 1
    assert info.kind == "schedule"
    assert "extra" not in info


def test_an_unknown_attribute_names_the_kind_and_the_fields_there_are() -> None:
    info = TriggerInfo({"kind": "manual"})
    with pytest.raises(AttributeError) as error:
        info.path  # noqa: B018 - the read is the test
    assert str(error.value) == "this 'manual' trigger has no 'path' (it has kind)"
    assert not hasattr(info, "path")
    assert getattr(info, "path", None) is None  # a flow can probe for a later kind's field


def test_an_empty_trigger_says_it_has_nothing() -> None:
    with pytest.raises(
        AttributeError, match=r"^this None trigger has no 'kind' \(it has nothing\)$"
    ):
        TriggerInfo({}).kind  # noqa: B018 - the read is the test


def test_fields_are_not_attributes_to_set() -> None:
    info = TriggerInfo({"kind": "manual"})
    with pytest.raises(AttributeError):
        info.kind = "schedule"  # type: ignore[attr-defined]  # setting is what must fail
    assert info.kind == "manual"


def test_repr_shows_the_fields() -> None:
    assert repr(TriggerInfo({"kind": "retry", "run_id": 3})) == (
        "TriggerInfo({'kind': 'retry', 'run_id': 3})"
    )


def _run(trigger: Mapping[str, Any]) -> Run:
    return Run(
        id=1,
        flow="f",
        task="t",
        index=None,
        logical_date=datetime(2026, 1, 1, tzinfo=UTC),
        params={},
        trigger=trigger,
        attempt=1,
        log=logging.LoggerAdapter(logging.getLogger("tests.context"), {}),
    )


def test_the_run_context_wraps_a_plain_mapping_and_keeps_a_trigger_info() -> None:
    run = _run({"kind": "backfill"})
    assert isinstance(run.trigger, TriggerInfo)
    assert run.trigger.kind == "backfill"
    info = TriggerInfo({"kind": "manual"})
    assert _run(info).trigger is info


@pytest.mark.parametrize(
    "duplicate",
    [copy.copy, copy.deepcopy, lambda info: pickle.loads(pickle.dumps(info))],
    ids=["copy", "deepcopy", "pickle"],
)
def test_a_trigger_info_can_be_copied_and_pickled(duplicate: Any) -> None:
    info = TriggerInfo(SCHEDULED)
    again = duplicate(info)
    assert again == info
    assert again.kind == "schedule"
