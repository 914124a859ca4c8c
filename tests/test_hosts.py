"""The allow-list every URL from HipChat passes."""

from __future__ import annotations

import pytest

from addon.errors import HostNotAllowed
from addon.hosts import HostPolicy

LISTED = HostPolicy(("api.hipchat.com", "hipchat.example.com:8443", "10.1.2.3"))
STAR = HostPolicy(("*", "127.0.0.1:9000"))


@pytest.mark.parametrize(
    "url",
    [
        "https://api.hipchat.com/v2/capabilities",
        "https://API.HipChat.com./v2/",
        "http://api.hipchat.com:8080/v2/",
        "https://hipchat.example.com:8443/v2/",
        "http://10.1.2.3/v2/capabilities",
    ],
)
def test_listed_hosts_pass(url: str) -> None:
    assert LISTED.check(url, what="url") == url


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/",
        "https://api.hipchat.com.evil.example/",
        "https://hipchat.example.com/",  # listed only with port 8443
        "https://user@api.hipchat.com/",
        "ftp://api.hipchat.com/",
        "//api.hipchat.com/",
        "http://[::1]/",
        "http://10.0.0.1/",
        "http://api.hipchat.com:99999/",
        "",
        None,
        42,
        "https://" + "a" * 3000 + ".com/",
    ],
)
def test_unlisted_or_malformed_urls_are_refused(url: object) -> None:
    with pytest.raises(HostNotAllowed):
        LISTED.check(url, what="capabilitiesUrl")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://127.0.0.1:9001/",
        "http://169.254.169.254/",
        "http://10.0.0.1/",
        "http://192.168.1.1/",
        "http://172.16.0.1/",
        "http://[::1]/",
        "http://[fe80::1]/",
        "http://0.0.0.0/",
        "http://2130706433/",
        "http://0x7f.1/",
        "http://localhost/",
        "http://foo.localhost/",
        "http://224.0.0.1/",
    ],
)
def test_star_refuses_internal_addresses_unless_listed(url: str) -> None:
    with pytest.raises(HostNotAllowed):
        STAR.check(url, what="url")


def test_star_allows_public_names_and_explicit_entries() -> None:
    assert STAR.check("https://hipchat.anywhere.example/", what="url")
    assert STAR.check("http://127.0.0.1:9000/v2/", what="url")
    assert STAR.check("https://8.8.8.8/", what="url")


def test_the_message_names_the_field_and_the_fix() -> None:
    with pytest.raises(HostNotAllowed) as error:
        LISTED.check("https://evil.example/", what="capabilitiesUrl")
    assert "capabilitiesUrl" in str(error.value)
    assert "ADDON_HIPCHAT_HOSTS" in str(error.value)
