from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest

from runtime import config as config_module
from runtime.config import Config, load_config
from runtime.errors import ConfigError


def write_config(folder: Path, text: str, name: str = "sluiceway.toml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def test_no_config_at_all_gives_the_defaults(tmp_path: Path) -> None:
    config = load_config(env={}, cwd=tmp_path)
    assert config == Config()
    assert config.flows == Path("flows")
    assert config.db == Path("sluiceway.db")
    assert config.max_concurrency == 32
    assert config.pools == {}
    assert config.source == "defaults"


def test_reads_sluiceway_toml_in_the_working_directory(tmp_path: Path) -> None:
    file = write_config(
        tmp_path,
        """
        max_concurrency = 4
        log_level = "debug"
        flush_interval = "100ms"
        result_max_bytes = 1024

        [pools]
        warehouse = 2
        api = 5
        """,
    )
    config = load_config(env={}, cwd=tmp_path)
    assert config.max_concurrency == 4
    assert config.log_level == "DEBUG"
    assert config.flush_interval == 0.1
    assert config.result_max_bytes == 1024
    assert config.pools == {"warehouse": 2, "api": 5}
    assert config.source == str(file)


def test_relative_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    file = write_config(
        tmp_path / "conf",
        f"""
        flows = "pipelines"
        db = "{tmp_path / "state" / "history.db"}"
        """,
        name="prod.toml",
    )
    config = load_config(file, env={}, cwd=tmp_path / "elsewhere")
    assert config.flows == tmp_path / "conf" / "pipelines"
    assert config.db == tmp_path / "state" / "history.db"


def test_relative_config_path_is_relative_to_cwd(tmp_path: Path) -> None:
    write_config(tmp_path / "conf", "max_concurrency = 3\n", name="prod.toml")
    config = load_config("conf/prod.toml", env={}, cwd=tmp_path)
    assert config.max_concurrency == 3
    assert config.source == str(tmp_path / "conf" / "prod.toml")


def test_config_file_from_sluiceway_config_variable(tmp_path: Path) -> None:
    file = write_config(tmp_path / "conf", "max_concurrency = 7\n", name="prod.toml")
    config = load_config(env={"SLUICEWAY_CONFIG": str(file)}, cwd=tmp_path)
    assert config.max_concurrency == 7


@pytest.mark.parametrize("via", ["argument", "variable"])
def test_named_config_file_that_is_missing_is_an_error(tmp_path: Path, via: str) -> None:
    missing = tmp_path / "nope.toml"
    path, env = (missing, {}) if via == "argument" else (None, {"SLUICEWAY_CONFIG": str(missing)})
    with pytest.raises(ConfigError, match="config file not found") as info:
        load_config(path, env=env, cwd=tmp_path)
    assert str(info.value) == f"{missing}: config file not found"


def test_unknown_key_names_the_key_and_the_file(tmp_path: Path) -> None:
    file = write_config(tmp_path, "max_concurency = 4\n")
    with pytest.raises(ConfigError) as info:
        load_config(env={}, cwd=tmp_path)
    message = str(info.value)
    assert message.startswith(f"{file}: unknown key 'max_concurency'")
    assert "max_concurrency" in message  # the known keys are listed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_concurrency = 0", "max_concurrency must be a whole number >= 1, not 0"),
        ("max_concurrency = true", "max_concurrency must be a whole number >= 1, not True"),
        ("max_concurrency = 2.5", "max_concurrency must be a whole number >= 1, not 2.5"),
        ("[pools]\nwarehouse = -1", "[pools] warehouse must be a whole number >= 1, not -1"),
        ("[pools]\nwarehouse = 'two'", "[pools] warehouse must be a whole number >= 1"),
        ("pools = 3", "pools must be a table like [pools], not 3"),
        ('log_level = "LOUD"', "log_level must be DEBUG, INFO, WARNING or ERROR, not 'LOUD'"),
        ('flush_interval = "soon"', "flush_interval value 'soon' is not a duration"),
        ("flush_interval = 10", "flush_interval must be at most 5 seconds, not 10"),
        ("flush_interval = -1", "flush_interval value must be a finite, non-negative"),
        ("db = 5", "db must be a path, not 5"),
        ('flows = ""', "flows must be a path, not ''"),
    ],
    ids=[
        "concurrency-zero",
        "concurrency-bool",
        "concurrency-float",
        "pool-negative",
        "pool-text",
        "pools-not-a-table",
        "log-level",
        "flush-not-duration",
        "flush-too-long",
        "flush-negative",
        "db-not-text",
        "flows-empty",
    ],
)
def test_bad_value_names_the_key_and_the_file(tmp_path: Path, text: str, message: str) -> None:
    file = write_config(tmp_path, text + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(env={}, cwd=tmp_path)
    assert str(info.value).startswith(f"{file}: {message}")


def test_bad_toml_names_the_file(tmp_path: Path) -> None:
    file = write_config(tmp_path, "max_concurrency = = 4\n")
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        load_config(env={}, cwd=tmp_path)
    assert str(info.value).startswith(f"{file}: not valid TOML: ")
    assert "line 1" in str(info.value)


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        """
        db = "file.db"
        flows = "file_flows"
        max_concurrency = 4

        [pools]
        warehouse = 2
        api = 5
        """,
    )
    env = {
        "SLUICEWAY_DB": "/srv/env.db",
        "SLUICEWAY_FLOWS": "/srv/env_flows",
        "SLUICEWAY_MAX_CONCURRENCY": "9",
        "SLUICEWAY_POOLS_WAREHOUSE": "3",
        "SLUICEWAY_LOG_LEVEL": "warning",
        "HOME": "/root",  # not ours: ignored
    }
    config = load_config(env=env, cwd=tmp_path)
    assert config.db == Path("/srv/env.db")
    assert config.flows == Path("/srv/env_flows")
    assert config.max_concurrency == 9
    assert config.pools == {"warehouse": 3, "api": 5}
    assert config.log_level == "WARNING"
    assert "environment SLUICEWAY_*" in config.source


def test_environment_alone_is_enough(tmp_path: Path) -> None:
    config = load_config(env={"SLUICEWAY_POOLS_WAREHOUSE": "2"}, cwd=tmp_path)
    assert config.pools == {"warehouse": 2}
    assert config.max_concurrency == 32
    assert config.source == "environment SLUICEWAY_*"


def test_unknown_environment_variable_is_a_warning_naming_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # other tools share the prefix: a user's own script reads SLUICEWAY_TOKEN
    monkeypatch.setattr(config_module, "_warned", set())
    env = {"SLUICEWAY_TOKEN": "s3cret", "SLUICEWAY_COLOUR": "blue", "SLUICEWAY_DB": "env.db"}
    with caplog.at_level(logging.WARNING, logger="sluiceway.runtime.config"):
        first = load_config(env=env, cwd=tmp_path)
        again = load_config(env=env, cwd=tmp_path)
    assert first == again
    assert first.db == Path("env.db")  # the variables it knows still apply
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split(";")[0] for line in lines] == [
        "environment SLUICEWAY_COLOUR is not a Sluiceway setting",
        "environment SLUICEWAY_TOKEN is not a Sluiceway setting",
    ]
    assert all(r.levelno == logging.WARNING for r in caplog.records)
    assert "SLUICEWAY_COMMIT_TIMEOUT" in lines[0]  # it lists the known ones
    assert not any("s3cret" in line for line in lines)  # never the value: it may be a secret


def test_store_timeouts_from_the_file_and_the_environment(tmp_path: Path) -> None:
    write_config(tmp_path, 'busy_timeout = "2s"\ncommit_timeout = 5\n')
    config = load_config(env={"SLUICEWAY_COMMIT_TIMEOUT": "500ms"}, cwd=tmp_path)
    assert (config.busy_timeout, config.commit_timeout) == (2.0, 0.5)
    assert (Config().busy_timeout, Config().commit_timeout) == (10.0, 30.0)
    with pytest.raises(ConfigError, match="SLUICEWAY_BUSY_TIMEOUT"):
        load_config(env={"SLUICEWAY_BUSY_TIMEOUT": "soon"}, cwd=tmp_path)


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("SLUICEWAY_MAX_CONCURRENCY", "0", "must be a whole number >= 1, not 0"),
        ("SLUICEWAY_MAX_CONCURRENCY", "many", "must be a whole number >= 1, not 'many'"),
        ("SLUICEWAY_POOLS_WAREHOUSE", "-1", "must be a whole number >= 1, not '-1'"),
        ("SLUICEWAY_LOG_LEVEL", "LOUD", "must be DEBUG, INFO, WARNING or ERROR, not 'LOUD'"),
        ("SLUICEWAY_DB", "", "must be a path, not ''"),
    ],
)
def test_bad_environment_value_names_the_variable(
    tmp_path: Path, var: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env={var: value}, cwd=tmp_path)
    assert str(info.value) == f"environment {var} {message}"


def test_flags_override_everything_and_none_keeps_the_value(tmp_path: Path) -> None:
    config = load_config(env={"SLUICEWAY_DB": "env.db"}, cwd=tmp_path)
    flagged = config.with_overrides(db=Path("flag.db"), flows=None)
    assert flagged.db == Path("flag.db")
    assert flagged.flows == Path("flows")


# --- [api] and [files] ---


def test_api_and_files_tables_are_read(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        """
        [api]
        bind = "127.0.0.1:8765"
        token = "s3cret-token"
        public_url = "https://sluiceway.example"

        [files]
        rescan = "30s"
        poll = true
        poll_interval = "250ms"
        """,
    )
    config = load_config(env={}, cwd=tmp_path)
    assert config.api.bind == "127.0.0.1:8765"
    assert config.api.token == "s3cret-token"
    assert config.api.auth == "token"
    assert config.api.public_url == "https://sluiceway.example"
    assert (config.files.rescan, config.files.poll, config.files.poll_interval) == (30, True, 0.25)
    assert "s3cret-token" not in repr(config)  # the token never shows in messages


def test_history_table_and_its_defaults(tmp_path: Path) -> None:
    assert (Config().history.retention, Config().history.prune_interval) == (None, 3600.0)
    write_config(tmp_path, '[history]\nretention = "90d"\nprune_interval = "10m"\n')
    config = load_config(env={"SLUICEWAY_HISTORY_PRUNE_INTERVAL": "5m"}, cwd=tmp_path)
    assert (config.history.retention, config.history.prune_interval) == (90 * 86400.0, 300.0)


def test_api_is_off_and_files_watch_by_default() -> None:
    config = Config()
    assert config.api.bind is None
    assert config.api.token is None
    assert (config.files.rescan, config.files.poll) == (60.0, False)


def test_api_and_files_settings_from_the_environment(tmp_path: Path) -> None:
    write_config(tmp_path, '[api]\nbind = "127.0.0.1:1"\n')
    env = {
        "SLUICEWAY_API_TOKEN": "from-env",
        "SLUICEWAY_API_BIND": "0.0.0.0:9000",
        "SLUICEWAY_FILES_POLL": "yes",
        "SLUICEWAY_FILES_RESCAN": "5m",
    }
    config = load_config(env=env, cwd=tmp_path)
    assert config.api.bind == "0.0.0.0:9000"  # the environment wins over the file
    assert config.api.token == "from-env"
    assert config.files.poll is True
    assert config.files.rescan == 300


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[api]\nbind = "8765"\n', "[api] bind must be 'host:port'"),
        ('[api]\nbind = "127.0.0.1:70000"\n', "[api] bind port must be 1-65535"),
        ('[api]\nauth = "basic"\n', "[api] auth must be one of 'token', 'none'"),
        (
            "[api]\nport = 1\n",
            "[api] unknown key 'port' (known: bind, token, auth, public_url, password_hash, session_ttl)",
        ),
        ("api = 3\n", "api must be a table like [api]"),
        ('[files]\nrescan = "10ms"\n', "[files] rescan must be at least 1s"),
        ('[files]\npoll = "sometimes"\n', "[files] poll must be true or false"),
        ('[history]\nretention = "10s"\n', "[history] retention must be at least 60s"),
        (
            "[history]\nkeep = 1\n",
            "[history] unknown key 'keep' (known: retention, prune_interval)",
        ),
    ],
)
def test_bad_api_and_files_settings_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    file = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(env={}, cwd=tmp_path)
    assert str(info.value).startswith(f"{file}: ")
    assert message in str(info.value)


def test_a_bad_api_variable_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="environment SLUICEWAY_API_AUTH must be one of"):
        load_config(env={"SLUICEWAY_API_AUTH": "open"}, cwd=tmp_path)
