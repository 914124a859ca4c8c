"""Settings: read once, validated, secrets masked."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from addon.errors import ConfigError
from addon.settings import Secret, Settings


def test_defaults_need_no_environment() -> None:
    settings = Settings.from_environ({})
    assert settings.base_url == "http://localhost:8000"
    assert settings.store_url == "sqlite:///addon.db"
    assert settings.hipchat_hosts == ("api.hipchat.com", "www.hipchat.com")
    assert settings.integrations_path == Path("integrations")
    assert settings.admin_token is None and settings.secret_key is None
    assert settings.install_flow == "server"


def test_an_empty_variable_counts_as_unset_except_the_base_url() -> None:
    source = Path(__file__).parent.parent / "addon" / "settings.py"
    names = set(re.findall(r'"(ADDON_[A-Z_]+|PROMETHEUS_MULTIPROC_DIR)"', source.read_text()))
    names.discard("ADDON_BASE_URL")
    assert len(names) > 20
    assert Settings.from_environ(dict.fromkeys(names, "")) == Settings.from_environ({})
    with pytest.raises(ConfigError, match="ADDON_BASE_URL"):
        Settings.from_environ({"ADDON_BASE_URL": ""})


def test_values_are_read_and_normalised() -> None:
    settings = Settings.from_environ(
        {
            "ADDON_BASE_URL": "https://addon.example.com/",
            "ADDON_STORE_URL": "redis://redis:6379/0",
            "ADDON_HIPCHAT_HOSTS": " HipChat.Example.com:8443 , api.hipchat.com",
            "ADDON_ADMIN_TOKEN": "a" * 32,
            "ADDON_TOKENS": "weather:abc, 12:ping:def",
            "ADDON_JWT_LEEWAY": "30",
            "ADDON_INSTALL_FLOW": "CLIENT",
        }
    )
    assert settings.base_url == "https://addon.example.com"
    assert settings.url_for("/x") == "https://addon.example.com/x"
    assert settings.hipchat_hosts == ("hipchat.example.com:8443", "api.hipchat.com")
    assert settings.static_tokens == ("weather:abc", "12:ping:def")
    assert settings.jwt_leeway == 30.0
    assert settings.install_flow == "client"
    assert settings.admin_token == Secret("a" * 32)


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://s1:26379,s2:26379/mymaster/0",
        "rediss+sentinel://s1:26379/mymaster",
        "redis+cluster://n1:6379,n2:6379",
        "rediss+cluster://n1:6379",
    ],
)
def test_sentinel_and_cluster_store_urls_are_accepted(url: str) -> None:
    env = {"ADDON_STORE_URL": url, "ADDON_STORE_PASSWORD": "hunter2"}
    settings = Settings.from_environ(env)
    assert (settings.store_url, settings.store_password) == (url, Secret("hunter2"))
    assert "hunter2" not in repr(settings)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ADDON_BASE_URL", "ftp://addon"),
        ("ADDON_BASE_URL", "not a url"),
        ("ADDON_STORE_URL", "postgres://db"),
        ("ADDON_STORE_URL", "sqlite:///"),
        ("ADDON_HIPCHAT_HOSTS", " , "),
        ("ADDON_HIPCHAT_HOSTS", "https://api.hipchat.com/v2"),
        ("ADDON_ADMIN_TOKEN", "short"),
        ("ADDON_SECRET_KEY", "short"),
        ("ADDON_JWT_LEEWAY", "soon"),
        ("ADDON_JWT_LEEWAY", "-1"),
        ("ADDON_JWT_LEEWAY", "nan"),
        ("ADDON_COMMAND_TIMEOUT", "0"),
        ("ADDON_READ_TIMEOUT", "0"),
        ("ADDON_READ_TIMEOUT", "inf"),
        ("ADDON_MAX_DOCUMENT_BYTES", "1.5"),
        ("ADDON_INSTALL_FLOW", "both"),
        ("ADDON_LOG_LEVEL", "LOUD"),
        ("ADDON_TOKENS", "no-colon-here"),
    ],
)
def test_a_bad_value_names_the_setting(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as error:
        Settings.from_environ({name: value})
    assert name in str(error.value)


def test_a_bad_token_entry_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as error:
        Settings.from_environ({"ADDON_TOKENS": "supersecrettokenvalue"})
    assert "supersecrettokenvalue" not in str(error.value)


def test_secrets_are_masked() -> None:
    settings = Settings.from_environ({"ADDON_SECRET_KEY": "k" * 20, "ADDON_ADMIN_TOKEN": "t" * 20})
    assert "k" * 20 not in repr(settings)
    assert "t" * 20 not in repr(settings)
    assert str(Secret("hidden-value")) == "**********"


def test_the_http_timeout_stays_inside_the_token_lock() -> None:
    # A token refresh must end before its 30 s single-flight lock does.
    assert Settings.from_environ({"ADDON_HTTP_TIMEOUT": "25"}).http_timeout == 25
    with pytest.raises(ConfigError, match="ADDON_HTTP_TIMEOUT"):
        Settings.from_environ({"ADDON_HTTP_TIMEOUT": "31"})


def test_log_format_and_storage_files_path() -> None:
    defaults = Settings.from_environ({})
    assert defaults.log_format == "auto"
    assert defaults.storage_files_path == Path("storage-files")
    settings = Settings.from_environ(
        {"ADDON_LOG_FORMAT": "JSON", "ADDON_STORAGE_FILES_PATH": "/srv/addon/backups"}
    )
    assert settings.log_format == "json"
    assert settings.storage_files_path == Path("/srv/addon/backups")
    with pytest.raises(ConfigError, match="ADDON_LOG_FORMAT 'xml' is not one of auto, json, text"):
        Settings.from_environ({"ADDON_LOG_FORMAT": "xml"})
