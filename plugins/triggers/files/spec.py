"""A ``files()`` trigger's options, checked and resolved: what the watcher, the claimer and
``sluiceway files`` all read."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from runtime.abc import Binding
from runtime.durations import parse_duration

# hidden and temporary names: never a complete file
ALWAYS_IGNORED = (".*", "*.tmp", "*.part", "*.crdownload", "*.swp")
KNOWN = frozenset(
    {
        "folder",
        "pattern",
        "recursive",
        "stable_for",
        "ignore",
        "batch",
        "on_success",
        "on_failure",
        "poll",
    }
)


@dataclass(frozen=True, slots=True)
class Action:
    """What to do with a file after its run: ``leave`` it, ``move`` it into ``folder``, or
    ``delete`` it."""

    kind: str = "leave"
    folder: Path | None = None

    def __str__(self) -> str:
        return f"move:{self.folder}" if self.kind == "move" else self.kind


@dataclass(frozen=True, slots=True)
class FilesSpec:
    """One ``files()`` trigger of one flow, resolved.

    :ivar flow: the flow's name
    :ivar key: the trigger's key (``str(spec)``)
    :ivar folder: the watched folder, absolute
    :ivar pattern: glob on the file name
    :ivar recursive: also files below *folder*
    :ivar stable_for: seconds a file's size and mtime must stay unchanged
    :ivar ignore: name globs ignored besides :data:`ALWAYS_IGNORED`
    :ivar batch: seconds of a batch window, or ``None`` for a run per file
    :ivar on_success: after a succeeded run
    :ivar on_failure: after a failed or cancelled run
    :ivar poll: seconds between scans when polling is asked for, or ``None`` (inotify)
    :ivar where: ``file:line`` of the trigger
    """

    flow: str
    key: str
    folder: Path
    pattern: str
    recursive: bool
    stable_for: float
    ignore: tuple[str, ...]
    batch: float | None
    on_success: Action
    on_failure: Action
    poll: float | None
    where: str

    def ignored_because(self, name: str) -> str | None:
        """Why a file called *name* (its base name) is not for this trigger, or ``None``."""
        for glob in ALWAYS_IGNORED:
            if fnmatch.fnmatchcase(name, glob):
                return f"hidden or temporary name ({glob})"
        for glob in self.ignore:
            if fnmatch.fnmatchcase(name, glob):
                return f"matches ignore={glob!r}"
        if not fnmatch.fnmatchcase(name, self.pattern):
            return f"does not match pattern={self.pattern!r}"
        return None


def _seconds(options: Mapping[str, Any], key: str, default: Any, problems: list[str]) -> Any:
    value = options.get(key, default)
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    try:
        return parse_duration(value, what=key)
    except ValueError as exc:
        problems.append(str(exc))
        return None


def _action(value: Any, key: str, problems: list[str]) -> tuple[str, str | None]:
    if value is None or value == "leave":
        return "leave", None
    if value == "delete":
        return "delete", None
    if isinstance(value, str) and value.startswith("move:") and value[5:].strip():
        return "move", value[5:].strip()
    problems.append(f"{key} must be 'move:FOLDER', 'delete' or None, not {value!r}")
    return "leave", None


def _problems(options: Mapping[str, Any]) -> list[str]:
    problems = [f"unknown option {k!r}" for k in sorted(set(options) - KNOWN)]
    folder = options.get("folder")
    if not isinstance(folder, str | Path) or not str(folder):
        problems.append(f"folder must be a path, not {folder!r}")
    pattern = options.get("pattern", "*")
    if not isinstance(pattern, str) or not pattern or "/" in pattern:
        problems.append(f"pattern must be a glob on the file name such as '*.csv', not {pattern!r}")
    if not isinstance(options.get("recursive", False), bool):
        problems.append(f"recursive must be True or False, not {options['recursive']!r}")
    ignore = options.get("ignore", ())
    if not isinstance(ignore, list | tuple) or not all(isinstance(g, str) and g for g in ignore):
        problems.append(f"ignore must be a list of name globs, not {ignore!r}")
    for key in ("stable_for", "batch", "poll"):
        _seconds(options, key, None, problems)
    poll = options.get("poll")
    if poll is not None and not problems and _seconds(options, "poll", None, []) < 0.05:
        problems.append(f"poll must be at least 50ms, not {poll!r}")
    batch = options.get("batch")
    if batch is not None and not problems and _seconds(options, "batch", None, []) <= 0:
        problems.append(f"batch must be longer than 0s, not {batch!r}")
    for key in ("on_success", "on_failure"):
        _action(options.get(key), key, problems)
    return problems


def check_options(options: Mapping[str, Any]) -> list[str]:
    """What is wrong with a ``files()`` trigger's options; ``[]`` when nothing is."""
    return _problems(options)


def resolve(binding: Binding) -> FilesSpec:
    """The spec of *binding*, its folders made absolute against the flow file's folder.

    :raises ValueError: when the options have problems (a loaded flow has none)
    """
    options = binding.options
    problems = _problems(options)
    if problems:
        raise ValueError("; ".join(problems))

    def absolute(path: str | Path) -> Path:
        # normalised ("flows/../inbox" is "inbox"), symlinks kept: a claim's path is the
        # path the watcher finds, and `run --file` names the same file the same way
        p = Path(path).expanduser()
        return Path(os.path.normpath(p if p.is_absolute() else binding.base / p))

    def action(key: str) -> Action:
        kind, folder = _action(options.get(key), key, [])
        return Action(kind, absolute(folder) if folder else None)

    return FilesSpec(
        flow=binding.flow,
        key=binding.key,
        folder=absolute(options["folder"]),
        pattern=options.get("pattern", "*"),
        recursive=bool(options.get("recursive", False)),
        stable_for=_seconds(options, "stable_for", "2s", []),
        ignore=tuple(options.get("ignore", ())),
        batch=_seconds(options, "batch", None, []),
        on_success=action("on_success"),
        on_failure=action("on_failure"),
        poll=_seconds(options, "poll", None, []),
        where=binding.where,
    )
