"""The operator's settings: environment variables, defaults and --help from one class."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from wml_operator import __main__ as entry
from wml_operator.settings import OperatorSettings, unknown_variables, usage, variables


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in variables():
        monkeypatch.delenv(name, raising=False)


def test_defaults_and_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    assert OperatorSettings().poll_fast_seconds == 5.0
    assert OperatorSettings().namespaces == ()
    monkeypatch.setenv("WML_OPERATOR_NAMESPACES", " team-a, team-b ,")
    monkeypatch.setenv("WML_OPERATOR_POLL_SLOW_SECONDS", "60")
    monkeypatch.setenv("WML_OPERATOR_WML_CREDENTIALS_SECRET", "ops/wml")
    monkeypatch.setenv("WML_OPERATOR_WML_URL", "")
    settings = OperatorSettings()
    assert settings.namespaces == ("team-a", "team-b")
    assert settings.poll_slow_seconds == 60.0
    assert settings.defaults.credentials_secret == "ops/wml"
    assert settings.defaults.url is None  # empty is unset


@pytest.mark.parametrize(("name", "value"), [("WML_OPERATOR_POLL_FAST_SECONDS", "soon"),
                                             ("WML_OPERATOR_LOG_FORMAT", "xml"),
                                             ("WML_OPERATOR_WML_CREDENTIALS_SECRET", "no-namespace")])
def test_a_value_it_cannot_read_is_refused_at_start(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                                    name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        OperatorSettings()
    assert entry.main([]) == 2
    assert name in capsys.readouterr().err


def test_an_unknown_variable_is_refused_not_ignored(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("WML_OPERATOR_POLL_FAST", "1")  # the name lacks _SECONDS
    assert unknown_variables({"WML_OPERATOR_POLL_FAST": "1", "HOME": "/"}) == ["WML_OPERATOR_POLL_FAST"]
    assert entry.main([]) == 2
    assert "WML_OPERATOR_POLL_FAST" in capsys.readouterr().err


def test_help_lists_every_setting_with_its_description(capsys: pytest.CaptureFixture[str]) -> None:
    assert entry.main(["--help"]) == 0
    shown = capsys.readouterr().out
    assert shown == usage() + "\n"
    for name, field in OperatorSettings.model_fields.items():
        assert f"WML_OPERATOR_{name.upper()}" in shown
        assert field.description
        assert field.description in shown
