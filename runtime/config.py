"""sluiceway.toml plus SLUICEWAY_* environment variables, validated into one Config."""

from __future__ import annotations

import logging
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from runtime import redact
from runtime.alerting import AlertRoute, read_alert_tables
from runtime.durations import parse_duration
from runtime.errors import ConfigError
from runtime.settings import (
    TABLES,
    ApiConfig,
    FilesConfig,
    HistoryConfig,
    block_threshold,
    flush_interval,
    log_level,
    path_value,
    positive_int,
    seconds_at_least,
)

__all__ = [
    "ApiConfig",
    "Config",
    "FilesConfig",
    "HistoryConfig",
    "configure_logging",
    "load_config",
]

log = logging.getLogger("sluiceway.runtime.config")
_warned: set[str] = set()  # unknown SLUICEWAY_* variables already logged by this process

CONFIG_FILE = "sluiceway.toml"
ENV_PREFIX = "SLUICEWAY_"
ENV_CONFIG = "SLUICEWAY_CONFIG"


@dataclass(frozen=True, slots=True)
class Config:
    """Everything configurable. Precedence: defaults < sluiceway.toml < SLUICEWAY_* < flags.

    :ivar flows: folder of flow files
    :ivar db: the SQLite file
    :ivar max_concurrency: most tasks running at once in the process, over all runs
    :ivar pools: named pools and their sizes, for ``@flow.task(pool=...)``
    :ivar log_level: DEBUG, INFO, WARNING or ERROR
    :ivar flush_interval: longest a state change waits in memory before its batch is committed
    :ivar result_max_bytes: larger results are passed on in memory but not stored
    :ivar shutdown_grace: on SIGTERM, how long running tasks may go on before they are
        interrupted (and resumed at the next start)
    :ivar loop_block_threshold: a callback (a task's code) that blocks the event loop longer
        than this is logged as a warning naming the task; 0 turns the watch off
    :ivar busy_timeout: how long a write waits for another process's lock on the database
        before the store reports that it cannot commit (it keeps the changes and retries)
    :ivar commit_timeout: at exit, how long changes that cannot be committed (a locked
        database, a full disk) are retried before the process gives up and exits non-zero
    :ivar api: the ``[api]`` table (:class:`ApiConfig`)
    :ivar files: the ``[files]`` table (:class:`FilesConfig`)
    :ivar history: the ``[history]`` table (:class:`HistoryConfig`)
    :ivar alerts: the ``[[alerts]]`` routes (:class:`runtime.alerting.AlertRoute`)
    :ivar notifiers: each ``[notifiers.<plugin>.<name>]`` table's options, ``${VAR}`` read
        from the environment, by ``"<plugin>:<name>"``; secret values are masked
    :ivar alert_retries: tries of one alert delivery before it is dead-lettered
    :ivar alert_timeout: longest one delivery attempt may take
    :ivar notifier_problems: why destinations cannot be used (a ``${VAR}`` not set); the
        service refuses to start with any
    :ivar executors: each ``[executors.<plugin>]`` table's options (checked by the plugin's
        ``check_options``), by plugin name: where ``executor="<plugin>"`` task bodies run
    :ivar source: where the values came from, for messages
    """

    flows: Path = Path("flows")
    db: Path = Path("sluiceway.db")
    max_concurrency: int = 32
    pools: Mapping[str, int] = field(default_factory=dict)
    log_level: str = "INFO"
    flush_interval: float = 0.05
    result_max_bytes: int = 8 * 1024 * 1024
    shutdown_grace: float = 30.0
    loop_block_threshold: float = 1.0
    busy_timeout: float = 10.0
    commit_timeout: float = 30.0
    api: ApiConfig = field(default_factory=ApiConfig)
    files: FilesConfig = field(default_factory=FilesConfig)
    history: HistoryConfig = field(default_factory=HistoryConfig)
    alerts: tuple[AlertRoute, ...] = ()
    notifiers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, repr=False)
    alert_retries: int = 8
    alert_timeout: float = 10.0
    notifier_problems: tuple[str, ...] = ()
    executors: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    source: str = "defaults"

    def with_overrides(self, **values: Any) -> Config:
        """A copy with the non-None *values* applied (command-line flags)."""
        return replace(self, **{k: v for k, v in values.items() if v is not None})


_KEYS: dict[str, Callable[[Any], Any]] = {
    "flows": path_value,
    "db": path_value,
    "max_concurrency": positive_int,
    "log_level": log_level,
    "flush_interval": flush_interval,
    "result_max_bytes": positive_int,
    "shutdown_grace": lambda value: parse_duration(value, what="value"),
    "loop_block_threshold": block_threshold,
    "busy_timeout": lambda value: parse_duration(value, what="value"),
    "commit_timeout": lambda value: parse_duration(value, what="value"),
    "alert_retries": positive_int,
    "alert_timeout": seconds_at_least(0.05),
}
_SECTIONS: dict[str, Callable[[Any], Any]] = {"pools": positive_int}


def load_config(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Config:
    """Read the config file (``path``, else ``$SLUICEWAY_CONFIG``, else ``./sluiceway.toml`` if
    it exists), then apply ``SLUICEWAY_<KEY>`` and ``SLUICEWAY_<SECTION>_<KEY>`` variables.

    No file at all is a valid setup. Relative paths in the file are relative to the file.

    :raises ConfigError: naming the key and the file or variable
    """
    env = os.environ if env is None else env
    cwd = cwd or Path.cwd()
    values: dict[str, Any] = {}
    pools: dict[str, int] = {}
    tables: dict[str, dict[str, Any]] = {name: {} for name in TABLES}
    sources = []
    raw: dict[str, Any] = {}  # the [[alerts]] and [notifiers.*] values of the file
    explicit = path or env.get(ENV_CONFIG)
    file = cwd / explicit if explicit else cwd / CONFIG_FILE
    if explicit and not file.exists():
        raise ConfigError(f"{file}: config file not found")
    if file.exists():
        sources.append(str(file))
        _read_file(file, values, pools, tables, raw)
    if _read_env(env, values, pools, tables):
        sources.append(f"environment {ENV_PREFIX}*")
    made = {name: TABLES[name][0](**given) for name, given in tables.items()}
    try:
        routes, notifiers, secret, unusable = read_alert_tables(raw, str(file), env)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    # never shown, wherever they could surface
    redact.register([made["api"].token, *secret])
    return Config(
        **values,
        **made,
        pools=pools,
        alerts=routes,
        notifiers=notifiers,
        notifier_problems=tuple(unusable),
        executors=raw.get("executors", {}),
        source=", ".join(sources) or "defaults",
    )


def _read_file(
    file: Path,
    values: dict[str, Any],
    pools: dict[str, int],
    tables: dict[str, dict[str, Any]],
    raw: dict[str, Any],
) -> None:
    """Add the settings of config file *file* to *values*, *pools* and *tables*; its alert
    routes and notifier tables to *raw* (read by :func:`read_alert_tables`)."""
    try:
        data = tomllib.loads(file.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc}") from exc
    for key, value in data.items():
        if key in ("alerts", "notifiers"):
            raw[key] = value
        elif key == "executors":
            raw[key] = read_executors(file, value)
        elif key in TABLES:
            if not isinstance(value, dict):
                raise ConfigError(f"{file}: {key} must be a table like [{key}], not {value!r}")
            _read_table(f"{file}: [{key}]", key, value, tables[key])
        elif key in _SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{file}: {key} must be a table like [{key}], not {value!r}")
            for name, item in value.items():
                pools[name] = _check(f"{file}: [{key}] {name}", _SECTIONS[key], item)
        elif key in _KEYS:
            checked = _check(f"{file}: {key}", _KEYS[key], value)
            if isinstance(checked, Path) and not checked.is_absolute():
                checked = file.parent / checked
            values[key] = checked
        else:
            tables_ = [*_SECTIONS, *TABLES, "notifiers.*"]
            known = ", ".join([*_KEYS, *(f"[{s}]" for s in tables_), "[executors.*]", "[[alerts]]"])
            raise ConfigError(f"{file}: unknown key {key!r} (known: {known})")


def _read_table(where: str, name: str, data: dict[str, Any], into: dict[str, Any]) -> None:
    keys = TABLES[name][1]
    for key, value in data.items():
        if key not in keys:
            raise ConfigError(f"{where} unknown key {key!r} (known: {', '.join(keys)})")
        into[key] = _check(f"{where} {key}", keys[key], value)


def _read_env(
    env: Mapping[str, str],
    values: dict[str, Any],
    pools: dict[str, int],
    tables: dict[str, dict[str, Any]],
) -> bool:
    """Apply the ``SLUICEWAY_*`` variables of *env* over *values*, *pools* and *tables*; True
    when one of them is a setting."""
    applied = False
    for var, value in sorted(env.items()):
        if not var.startswith(ENV_PREFIX) or var == ENV_CONFIG:
            continue
        key = var[len(ENV_PREFIX) :].lower()
        table = next((t for t in TABLES if key.startswith(t + "_")), None)
        if table is not None and key[len(table) + 1 :] in TABLES[table][1]:
            name = key[len(table) + 1 :]
            tables[table][name] = _check(f"environment {var}", TABLES[table][1][name], value)
            applied = True
            continue
        section = next((s for s in _SECTIONS if key.startswith(s + "_")), None)
        if section is not None:
            name = key[len(section) + 1 :]
            pools[name] = _check(f"environment {var}", _SECTIONS[section], value)
        elif key in _KEYS:
            values[key] = _check(f"environment {var}", _KEYS[key], value)
        else:
            _warn_unknown(var)
            continue
        applied = True
    return applied


def _warn_unknown(var: str) -> None:
    """Other tools share the prefix (a user's own SLUICEWAY_TOKEN): say it once, go on."""
    if var in _warned:
        return
    _warned.add(var)
    names = [ENV_CONFIG, *(f"{ENV_PREFIX}{k.upper()}" for k in _KEYS)]
    names += [f"{ENV_PREFIX}{t.upper()}_{k.upper()}" for t in TABLES for k in TABLES[t][1]]
    names += [f"{ENV_PREFIX}{s.upper()}_<NAME>" for s in _SECTIONS]
    log.warning(
        "environment %s is not a Sluiceway setting; ignored (known: %s)", var, ", ".join(names)
    )


def read_executors(file: Path, value: Any) -> dict[str, dict[str, Any]]:
    """The ``[executors.<plugin>]`` tables of *file*, each checked by its plugin.

    :raises ConfigError: for a plugin that is not installed or not an executor, or options
        it finds wrong (every problem at once)
    """
    from runtime import registry

    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise ConfigError(f"{file}: executors must be tables like [executors.dask], not {value!r}")
    found: dict[str, dict[str, Any]] = {}
    for name, options in value.items():
        where = f"{file}: [executors.{name}]"
        if name == "local":
            raise ConfigError(f"{where}: the local executor is built in and takes no options")
        try:
            cls = registry.executor(name)
        except registry.PluginError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        problems = cls.check_options(options)
        if problems:
            raise ConfigError(f"{where}: {'; '.join(problems)}")
        found[name] = dict(options)
    return found


def _check(where: str, check: Callable[[Any], Any], value: Any) -> Any:
    try:
        return check(value)
    except ValueError as exc:
        raise ConfigError(f"{where} {exc}") from None


def configure_logging(level: str, env: Mapping[str, str] | None = None) -> None:
    """The only logging setup: one line per record on stderr.

    Under systemd (``JOURNAL_STREAM`` set) lines carry a ``<N>`` syslog priority prefix and no
    timestamp, so journald records the level and its own time; elsewhere they start with the
    time and the level.
    """
    env = os.environ if env is None else env
    handler = logging.StreamHandler()
    if env.get("JOURNAL_STREAM"):
        handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    handler.addFilter(redact.RedactingFilter())  # registered secrets never reach a log line
    root = logging.getLogger("sluiceway")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


_PRIORITY = {"CRITICAL": 2, "ERROR": 3, "WARNING": 4, "INFO": 6, "DEBUG": 7}


class _JournalFormatter(logging.Formatter):
    """Prefixes sd-daemon priorities (``<3>`` error ... ``<7>`` debug), one record a line."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{_PRIORITY.get(record.levelname, 6)}>"
        # journald splits on newlines: each line of a traceback keeps the record's priority
        return "\n".join(prefix + line for line in super().format(record).splitlines())
