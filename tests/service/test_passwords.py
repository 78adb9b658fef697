"""Password hashes: the scrypt format round trip, a bad ``[api] password_hash`` refused at
start naming the key (never the value), and ``sluiceway hash-password`` in process."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from runtime.cli.main import main
from runtime.config import ApiConfig, load_config
from runtime.errors import ConfigError
from runtime.service.api.listen import api_settings
from runtime.service.api.passwords import hash_password, parse_hash
from tests.service.api_server import TOKEN

GOOD = hash_password("s3cret-pass", n=1 << 10)


def test_a_hash_verifies_its_password_only() -> None:
    parsed = parse_hash(GOOD)
    assert parsed.verify("s3cret-pass")
    assert not parsed.verify("s3cret-pasS")
    assert not parsed.verify("")
    assert (parsed.n, parsed.r, parsed.p) == (1 << 10, 8, 1)
    assert "s3cret" not in repr(parsed)
    assert GOOD.split("$")[5] not in repr(parsed)


def test_each_hash_has_its_own_salt() -> None:
    assert hash_password("same", n=1 << 10) != hash_password("same", n=1 << 10)


def test_the_default_parameters_are_the_documented_ones() -> None:
    name, n, r, p, salt, digest = hash_password("x").split("$")
    assert (name, n, r, p) == ("scrypt", "32768", "8", "1")
    assert len(salt) >= 22
    assert len(digest) >= 43


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("hunter2", "is not a hash made by `sluiceway hash-password`"),
        ("bcrypt$2b$12$abc", "is not a hash made by"),
        (GOOD.replace("$1024$", "$1000$"), "N must be a power of 2"),
        (GOOD.replace("$1024$", "$x$"), "whole numbers"),
        (GOOD.replace("$8$", "$99$", 1), "r must be 1-64"),
        (GOOD.replace("$1024$", f"${1 << 20}$").replace("$8$", "$64$", 1), "MiB per login"),
        (GOOD.rsplit("$", 1)[0] + "$not*base64", "base64"),
        (GOOD.rsplit("$", 1)[0] + "$QUJD", "too short"),
    ],
)
def test_a_bad_password_hash_is_a_config_error_naming_the_key(text: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        api_settings(ApiConfig(bind="127.0.0.1:8765", token=TOKEN, password_hash=text))
    message = str(caught.value)
    assert message.startswith("[api] password_hash ")
    assert says in message
    assert text not in message


def test_a_good_password_hash_reaches_the_settings() -> None:
    settings = api_settings(ApiConfig(bind="127.0.0.1:8765", token=TOKEN, password_hash=GOOD))
    assert settings is not None
    assert settings.password is not None
    assert settings.password.verify("s3cret-pass")


@pytest.mark.parametrize(
    "url", ["etl.example.com", "ftp://etl.example.com", "https://", "http://h:99999"]
)
def test_a_bad_public_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match=r"\[api\] public_url"):
        api_settings(ApiConfig(bind="127.0.0.1:8765", token=TOKEN, public_url=url))


# --- sluiceway hash-password ---


def run_hash_password(
    monkeypatch: pytest.MonkeyPatch, stdin: str, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = main(["hash-password"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_hash_password_prints_a_config_line_that_verifies(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_hash_password(monkeypatch, "correct horse\n", capsys)
    assert code == 0, err
    assert "under [api]" in err
    assert "correct horse" not in out + err
    line = out.strip()
    assert line.startswith('password_hash = "scrypt$')
    assert line.endswith('"')
    # the line, pasted into sluiceway.toml, logs in with the password
    (cli_env / "sluiceway.toml").write_text(
        f'[api]\nbind = "127.0.0.1:8765"\ntoken = "{TOKEN}"\n{line}\n'
    )
    settings = api_settings(load_config(cwd=cli_env, env={}).api)
    assert settings is not None
    assert settings.password is not None
    assert settings.password.verify("correct horse")
    assert not settings.password.verify("correct horse\n")


def test_hash_password_refuses_an_empty_password(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_hash_password(monkeypatch, "\n", capsys)
    assert code == 2
    assert out == ""
    assert "the password is empty" in err


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("answers", "code"), [(["pass-word-1", "pass-word-2"], 2), (["pass-word-1"] * 2, 0)]
)
def test_hash_password_asks_twice_on_a_terminal(
    cli_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    answers: list[str],
    code: int,
) -> None:
    given = iter(answers)
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(given))
    monkeypatch.setattr("sys.stdin", Tty())
    assert main(["hash-password"]) == code
    captured = capsys.readouterr()
    if code:
        assert "the passwords differ" in captured.err
        assert captured.out == ""
    else:
        assert parse_hash(captured.out.split('"')[1]).verify("pass-word-1")
