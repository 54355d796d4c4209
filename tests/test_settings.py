"""Settings precedence (defaults < TOML file < environment < explicit overrides) and errors."""

from __future__ import annotations

import pytest

from server.core.settings import SETTINGS, SettingsError, load_settings


def test_defaults_are_the_embedded_ones(tmp_path):
    s = load_settings(env={})
    assert s.executor == "local"
    assert s.resolved_database_url.startswith("sqlite:///")
    assert s.resolved_database_url.endswith("var/openastro.db")
    assert s.ncores >= 1
    assert all(s.sources[x.name] == "default" for x in SETTINGS)


def test_toml_overrides_defaults_and_environment_overrides_toml(tmp_path):
    cfg = tmp_path / "oa.toml"
    cfg.write_text('solve_timeout_s = 12.5\nexecutor = "boinc"\napi_port = 9000\n')
    s = load_settings(cfg, env={"OPENASTRO_API_PORT": "9100"})
    assert s.solve_timeout_s == 12.5
    assert s.executor == "boinc"
    assert s.api_port == 9100
    assert s.sources["api_port"] == "env OPENASTRO_API_PORT"
    assert s.sources["executor"] == str(cfg)


def test_config_file_named_by_environment_is_read(tmp_path):
    cfg = tmp_path / "oa.toml"
    cfg.write_text('[openastro]\nncores = 3\n')
    assert load_settings(env={"OPENASTRO_CONFIG": str(cfg)}).ncores == 3


def test_explicit_overrides_win_over_environment():
    s = load_settings(env={"OPENASTRO_NCORES": "4"}, overrides={"ncores": 2})
    assert s.ncores == 2


@pytest.mark.parametrize(
    "env, message",
    [
        ({"OPENASTRO_NCORES": "zero"}, "invalid value 'zero' for setting ncores"),
        ({"OPENASTRO_NCORES": "0"}, "invalid value '0' for setting ncores"),
        ({"OPENASTRO_EXECUTOR": "slurm"}, "invalid value 'slurm' for setting executor"),
        ({"OPENASTRO_API_PORT": "70000"}, "invalid value '70000' for setting api_port"),
        ({"OPENASTRO_PROGRESS": "maybe"}, "invalid value 'maybe' for setting progress"),
        ({"OPENASTRO_NO_SUCH_THING": "1"}, "unknown setting environment variable OPENASTRO_NO_SUCH_THING"),
    ],
)
def test_bad_environment_value_names_the_setting_and_value(env, message):
    with pytest.raises(SettingsError, match=message):
        load_settings(env=env)


def test_unknown_key_in_toml_is_refused(tmp_path):
    cfg = tmp_path / "oa.toml"
    cfg.write_text("databse_url = 'sqlite://'\n")
    with pytest.raises(SettingsError, match="unknown setting 'databse_url'"):
        load_settings(cfg, env={})


def test_invalid_toml_and_missing_file_are_clear(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("ncores = = 2\n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(bad, env={})
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tmp_path / "missing.toml", env={})


def test_test_harness_variables_are_not_settings():
    load_settings(env={"OPENASTRO_TEST_MYSQL_URL": "mysql://x"})
