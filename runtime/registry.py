"""The plugin registry: finds trigger sources, notifiers and executors by name.

Implementations are found through the entry-point group ``sluiceway.plugins``. The project's
own plugins are registered in its ``pyproject.toml`` exactly as a third party's would be::

    [project.entry-points."sluiceway.plugins"]
    files = "plugins.triggers.files:FilesSource"

An entry point is loaded (its module imported) only when its name is first asked for.
:func:`register` adds a class from code (tests, an application embedding Sluiceway).
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, cast

from runtime.abc import Executor, Notifier, Plugin, TriggerSource
from runtime.errors import SluicewayError

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

__all__ = [
    "GROUP",
    "KINDS",
    "PluginError",
    "executor",
    "find",
    "names",
    "notifier",
    "register",
    "trigger_source",
]

log = logging.getLogger("sluiceway.runtime.registry")

GROUP = "sluiceway.plugins"
KINDS: dict[str, type[Plugin]] = {
    "trigger": TriggerSource,
    "notifier": Notifier,
    "executor": Executor,
}

_lock = threading.Lock()  # the flow loader runs in a thread beside the event loop
_loaded: dict[str, type[Plugin]] = {}  # entry-point name: class, once loaded
_registered: dict[str, type[Plugin]] = {}  # added by register()


class PluginError(SluicewayError):
    """A plugin name that is unknown, or whose entry point does not load as a plugin."""


def register(cls: type[Plugin]) -> type[Plugin]:
    """Make *cls* findable under ``cls.plugin`` (usable as a class decorator).

    :raises PluginError: when *cls* is no plugin class or has no name
    """
    _kind_of(cls, f"class {cls!r}")
    with _lock:
        _registered[cls.plugin] = cls
    return cls


def unregister(name: str) -> None:
    """Forget a class added by :func:`register` (tests)."""
    with _lock:
        _registered.pop(name, None)


def names(kind: str) -> list[str]:
    """The names of every plugin of *kind* (``"trigger"``, ``"notifier"``, ``"executor"``)
    that is installed or registered, sorted. Loads entry points to learn their kind; broken
    ones are left out."""
    found = set()
    for name in {*_entry_points(), *_registered}:
        try:
            cls = _get(name)
        except PluginError:
            continue
        if issubclass(cls, KINDS[kind]):
            found.add(name)
    return sorted(found)


def find(kind: str, name: str) -> type[Plugin]:
    """The plugin class of *kind* (``"trigger"``, ``"notifier"``, ``"executor"``) called
    *name*; :func:`trigger_source`, :func:`notifier` and :func:`executor` say their type.

    :raises PluginError: naming the plugin, what is installed, or why it does not load
    """
    if not isinstance(name, str) or not name:
        raise PluginError(f"a {kind} plugin name must be a non-empty string, not {name!r}")
    cls = _get(name)
    if not issubclass(cls, KINDS[kind]):
        raise PluginError(
            f"plugin {name!r} is a {_kind_of(cls, name)} plugin, not a {kind} plugin"
            f" (installed {kind} plugins: {', '.join(names(kind)) or 'none'})"
        )
    return cls


def trigger_source(name: str) -> type[TriggerSource]:
    """The :class:`~runtime.abc.TriggerSource` class called *name* (see :func:`find`)."""
    return cast("type[TriggerSource]", find("trigger", name))


def notifier(name: str) -> type[Notifier]:
    """The :class:`~runtime.abc.Notifier` class called *name* (see :func:`find`)."""
    return cast("type[Notifier]", find("notifier", name))


def executor(name: str) -> type[Executor]:
    """The :class:`~runtime.abc.Executor` class called *name* (see :func:`find`)."""
    return cast("type[Executor]", find("executor", name))


def _get(name: str) -> type[Plugin]:
    with _lock:
        cls = _registered.get(name) or _loaded.get(name)
    if cls is not None:
        return cls
    found = _entry_points().get(name)
    if found is None:
        installed = ", ".join(sorted({*_entry_points(), *_registered})) or "none"
        raise PluginError(f"unknown plugin {name!r} (installed: {installed})")
    try:
        loaded = found.load()
    except Exception as exc:
        raise PluginError(
            f"plugin {name!r} ({found.value}) does not load: {type(exc).__name__}: {exc}"
        ) from exc
    where = f"plugin {name!r} ({found.value})"
    _kind_of(loaded, where)
    if loaded.plugin != name:
        raise PluginError(f"{where} calls itself {loaded.plugin!r}; the names must match")
    with _lock:
        _loaded[name] = loaded
    return loaded  # type: ignore[no-any-return]


def _kind_of(cls: object, where: str) -> str:
    """The kind of plugin class *cls* is; raises :class:`PluginError` when it is none."""
    if isinstance(cls, type):
        for kind, base in KINDS.items():
            if issubclass(cls, base):
                if not isinstance(getattr(cls, "plugin", None), str) or not cls.plugin:
                    raise PluginError(f"{where} has no `plugin` name")
                return kind
    bases = ", ".join(f"runtime.abc.{b.__name__}" for b in KINDS.values())
    raise PluginError(f"{where} is not a plugin class (derive from one of {bases})")


_eps_cache: dict[str, EntryPoint] | None = None


def _entry_points() -> dict[str, EntryPoint]:
    """The entry points of :data:`GROUP` by name, read once per process."""
    global _eps_cache
    with _lock:
        if _eps_cache is None:
            # imported here: importlib.metadata costs about 20 ms, a quarter of `import
            # runtime`, and only a flow naming a plugin (or the service) needs it
            from importlib.metadata import entry_points

            _eps_cache = {}
            for ep in entry_points(group=GROUP):
                _eps_cache.setdefault(ep.name, ep)
        return _eps_cache
