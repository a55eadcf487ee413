"""One settings path: defaults, then the environment (the ConfigMap), then flags."""

from __future__ import annotations

import pytest

from scalegate.settings import (
    ForecasterSettings,
    OperatorSettings,
    SettingsError,
    bind_address,
    process_identity,
    resolve,
)


def test_defaults_then_environment_then_flags():
    env = {"SCALEGATE_WORKERS": "3", "SCALEGATE_RETENTION_SECONDS": "60"}
    assert resolve(OperatorSettings, {}, {}) == OperatorSettings()
    from_env = resolve(OperatorSettings, {}, env)
    assert (from_env.workers, from_env.retention_seconds) == (3, 60.0)
    # A flag that was given wins; one that was not (None) leaves the environment's value.
    both = resolve(OperatorSettings, {"workers": 5, "retention_seconds": None, "namespace": ["x"]}, env)
    assert (both.workers, both.retention_seconds) == (5, 60.0)


def test_every_field_has_its_own_environment_variable():
    for cls in (OperatorSettings, ForecasterSettings):
        import dataclasses
        names = [f.metadata["env"] for f in dataclasses.fields(cls)]
        assert all(name and name.startswith("SCALEGATE_") for name in names)
        assert len(set(names)) == len(names)


def test_forecaster_environment_types():
    settings = resolve(ForecasterSettings, {}, {
        "SCALEGATE_PROMETHEUS_URL": "https://prom:9090", "SCALEGATE_PROMETHEUS_INSECURE": "true",
        "SCALEGATE_PROMETHEUS_TIMEOUT_SECONDS": "7.5", "SCALEGATE_PROMETHEUS_CA_FILE": ""})
    assert settings.prometheus_url == "https://prom:9090"
    assert settings.prometheus_insecure is True and settings.prometheus_timeout == 7.5
    assert settings.prometheus_ca_file is None  # an empty ConfigMap value means "not set"


@pytest.mark.parametrize("env, message", [
    ({"SCALEGATE_WORKERS": "many"}, "SCALEGATE_WORKERS='many' is not a valid int"),
    ({"SCALEGATE_RETENTION_SECONDS": "nan"}, "SCALEGATE_RETENTION_SECONDS='nan' is not a valid float"),
    ({"SCALEGATE_METRICS_BIND_ADDRESS": "8000"}, "must be HOST:PORT"),
    ({"SCALEGATE_HEALTH_PROBE_BIND_ADDRESS": ":99999"}, "out of range"),
])
def test_bad_values_are_refused_with_the_setting_named(env, message):
    with pytest.raises(SettingsError, match=message):
        resolve(OperatorSettings, {}, env)


def test_bool_refuses_what_is_neither_true_nor_false():
    with pytest.raises(SettingsError, match="SCALEGATE_PROMETHEUS_INSECURE"):
        resolve(ForecasterSettings, {}, {"SCALEGATE_PROMETHEUS_INSECURE": "maybe"})


@pytest.mark.parametrize("value, expected", [
    (":8000", ("0.0.0.0", 8000)), ("127.0.0.1:9", ("127.0.0.1", 9)), ("[::1]:8080", ("::1", 8080)),
    ("0", None), ("", None),
])
def test_bind_address(value, expected):
    assert bind_address(value) == expected


def test_identity_needs_no_user_name(monkeypatch):
    monkeypatch.setenv("POD_NAME", "scalegate-operator-abc")
    assert process_identity() == "scalegate-operator-abc"
    monkeypatch.delenv("POD_NAME")
    monkeypatch.delenv("POD_ID", raising=False)
    import getpass
    monkeypatch.setattr(getpass, "getuser", lambda: (_ for _ in ()).throw(KeyError("getpwuid(): uid not found")))
    assert "/" in process_identity()
