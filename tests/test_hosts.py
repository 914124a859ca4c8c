"""The allow-list every URL from HipChat passes."""

from __future__ import annotations

import datetime
import socket
import ssl
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from addon.errors import HostNotAllowed, TokenError, UpstreamError
from addon.hipchat import HipChatClient
from addon.hosts import HostPolicy, PinnedTransport, Resolver, resolve_host
from addon.installations import Installation
from addon.settings import Secret
from addon.testing import FakeHipChat
from addon.tokens import client_credentials, fetch_token
from tests.helpers import free_port, served

LISTED = HostPolicy(("api.hipchat.com", "hipchat.example.com:8443", "10.1.2.3"))
STAR = HostPolicy(("*", "127.0.0.1:9000"))


@pytest.mark.parametrize(
    "url",
    [
        "https://api.hipchat.com/v2/capabilities",
        "https://API.HipChat.com./v2/",
        "https://api.hipchat.com:443/v2/",
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
        "http://api.hipchat.com:8080/v2/",  # listed without a port: the default port only
        "http://api.hipchat.com:443/v2/",  # 443 is https's port, not http's
        "https://api.hipchat.com:6379/",
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
        "http://localhost./",
        "http://100.64.0.1/",  # shared address space (carrier-grade NAT)
        "http://[::ffff:127.0.0.1]/",  # IPv4-mapped
        "http://[::127.0.0.1]/",  # IPv4-compatible
        "http://[64:ff9b::7f00:1]/",  # NAT64
        "http://[64:ff9b::a00:1]/",  # NAT64 of 10.0.0.1
        "http://[2002:7f00:1::]/",  # 6to4
        "http://[2002:a9fe:a9fe::]/",  # 6to4 of 169.254.169.254
        "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",  # Teredo, client 192.0.2.45
        "http://[64:ff9b:1::1]/",  # local-use NAT64
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


def test_embedded_public_ipv4_is_judged_by_its_ipv4_address() -> None:
    assert STAR.check("http://[64:ff9b::808:808]/", what="url")  # NAT64 of 8.8.8.8
    assert STAR.check("http://[2002:808:808::]/", what="url")  # 6to4 of 8.8.8.8


def resolver(table: dict[str, list[str]], calls: list[str] | None = None) -> Resolver:
    """A resolver answering from ``table`` (unknown names fail as getaddrinfo does)."""

    async def resolve(host: str) -> Sequence[str]:
        if calls is not None:
            calls.append(host)
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return table[host]

    return resolve


PUBLIC = "93.184.216.34"


@pytest.mark.parametrize(
    "addresses",
    [
        ["127.0.0.1"],
        ["::1"],
        ["10.0.0.7"],
        ["169.254.169.254"],
        [PUBLIC, "127.0.0.1"],  # every address is checked, not only the first
        ["::ffff:127.0.0.1"],
        ["64:ff9b::7f00:1"],
        ["2002:7f00:1::"],
        ["0.0.0.0"],
        ["100.64.0.1"],
    ],
    ids=str,
)
@pytest.mark.anyio
async def test_star_refuses_names_that_resolve_to_internal_addresses(addresses: list[str]) -> None:
    policy = HostPolicy(("*",), resolve=resolver({"evil.test": addresses}))
    with pytest.raises(HostNotAllowed, match="internal address"):
        await policy.pin(httpx.URL("https://evil.test/capabilities"))


@pytest.mark.anyio
async def test_pin_returns_the_checked_address_after_one_lookup() -> None:
    calls: list[str] = []
    policy = HostPolicy(("*",), resolve=resolver({"hipchat.example": [PUBLIC, "8.8.8.8"]}, calls))
    assert await policy.pin(httpx.URL("https://hipchat.example/v2/")) == PUBLIC
    assert calls == ["hipchat.example"]


@pytest.mark.anyio
async def test_a_listed_host_may_resolve_to_an_internal_address() -> None:
    policy = HostPolicy(("hipchat.corp",), resolve=resolver({"hipchat.corp": ["10.1.2.3"]}))
    assert await policy.pin(httpx.URL("https://hipchat.corp/v2/")) == "10.1.2.3"
    with pytest.raises(HostNotAllowed):  # but only on the scheme's default port
        await policy.pin(httpx.URL("https://hipchat.corp:6379/"))


@pytest.mark.anyio
async def test_a_listed_address_may_be_reached_through_a_name() -> None:
    policy = HostPolicy(("*", "127.0.0.1:9000"), resolve=resolver({"dev.test": ["127.0.0.1"]}))
    assert await policy.pin(httpx.URL("http://dev.test:9000/")) == "127.0.0.1"
    with pytest.raises(HostNotAllowed):
        await policy.pin(httpx.URL("http://dev.test:6379/"))


@pytest.mark.anyio
async def test_a_name_that_does_not_resolve_is_refused() -> None:
    policy = HostPolicy(("*",), resolve=resolver({}))
    with pytest.raises(HostNotAllowed, match="could not be resolved"):
        await policy.pin(httpx.URL("https://nowhere.test/"))


@pytest.mark.anyio
async def test_pin_checks_literals_and_ports_too() -> None:
    policy = HostPolicy(("*",), resolve=resolver({}))
    assert await policy.pin(httpx.URL(f"https://{PUBLIC}/")) == PUBLIC
    for url in ("http://[::ffff:127.0.0.1]/", "http://localhost/", "http://127.0.0.1:6379/"):
        with pytest.raises(HostNotAllowed):
            await policy.pin(httpx.URL(url))


@pytest.mark.anyio
async def test_the_system_resolver_is_asked_through_the_event_loop() -> None:
    assert {"127.0.0.1", "::1"} & set(await resolve_host("localhost"))


@pytest.mark.anyio
async def test_the_pinned_transport_connects_to_the_checked_address() -> None:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True})

    # A rebinding resolver: public for the check, loopback for anyone who asks again.
    answers = iter([[PUBLIC], ["127.0.0.1"], ["127.0.0.1"]])

    async def rebinding(host: str) -> Sequence[str]:
        return next(answers)

    policy = HostPolicy(("*",), resolve=rebinding)
    transport = PinnedTransport(policy, transport=httpx.MockTransport(record))
    async with httpx.AsyncClient(transport=transport) as http:
        response = await http.get("https://hipchat.example/v2/room?x=1")

    assert response.json() == {"ok": True}
    assert str(response.request.url) == "https://hipchat.example/v2/room?x=1"
    [sent] = seen
    assert sent.url == httpx.URL(f"https://{PUBLIC}/v2/room?x=1")
    assert sent.headers["host"] == "hipchat.example"
    assert sent.extensions["sni_hostname"] == "hipchat.example"


@pytest.mark.anyio
async def test_the_pinned_transport_refuses_before_connecting() -> None:
    seen: list[httpx.Request] = []
    policy = HostPolicy(("*",), resolve=resolver({"evil.test": ["127.0.0.1"]}))

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    inner = httpx.MockTransport(record)
    async with httpx.AsyncClient(transport=PinnedTransport(policy, transport=inner)) as http:
        with pytest.raises(HostNotAllowed):
            await http.get("http://evil.test/")
    assert seen == []


@pytest.mark.anyio
async def test_the_pinned_transport_reaches_a_real_server_by_the_checked_address(
    live_hipchat: FakeHipChat,
) -> None:
    """hipchat.test resolves nowhere but in our table: the request can only use that answer."""
    port = httpx.URL(live_hipchat.base_url).port
    policy = HostPolicy(
        (f"hipchat.test:{port}",), resolve=resolver({"hipchat.test": ["127.0.0.1"]})
    )
    async with httpx.AsyncClient(transport=PinnedTransport(policy)) as http:
        response = await http.get(f"http://hipchat.test:{port}/v2/capabilities")
    assert response.status_code == 200
    assert response.json()["links"]["self"]


class RetryOnce(httpx.Auth):
    """Sends the request again after the first answer, as HipChatAuth does after a 401."""

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        yield request
        yield request


@pytest.mark.anyio
async def test_a_request_sent_again_by_an_auth_flow_is_checked_and_pinned_again() -> None:
    seen: list[httpx.URL] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        return httpx.Response(401 if len(seen) == 1 else 200)

    policy = HostPolicy(("hipchat.example",), resolve=resolver({"hipchat.example": [PUBLIC]}))
    transport = PinnedTransport(policy, transport=httpx.MockTransport(record))
    async with httpx.AsyncClient(transport=transport) as http:
        response = await http.get("https://hipchat.example/v2/room", auth=RetryOnce())
    assert response.status_code == 200
    assert seen == [httpx.URL(f"https://{PUBLIC}/v2/room")] * 2


def certificate_for(name: str, directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for DNS name ``name`` only (no IP address), and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@pytest.mark.anyio
async def test_tls_is_verified_against_the_host_name_not_the_pinned_address(
    tmp_path: Path,
) -> None:
    cert_file, key_file = certificate_for("hipchat.test", tmp_path)
    port = free_port()
    hosts = (f"hipchat.test:{port}", f"127.0.0.1:{port}")
    policy = HostPolicy(hosts, resolve=resolver({"hipchat.test": ["127.0.0.1"]}))
    trusted = ssl.create_default_context(cafile=str(cert_file))
    transport = PinnedTransport(policy, ssl_context=trusted)
    app = FakeHipChat(base_url=f"https://hipchat.test:{port}").app
    with served(app, port, ssl_certfile=str(cert_file), ssl_keyfile=str(key_file)):
        async with httpx.AsyncClient(transport=transport) as http:
            response = await http.get(f"https://hipchat.test:{port}/v2/capabilities")
            assert response.status_code == 200
            # Same address, another name: a connection of its own, whose check fails.
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await http.get(f"https://127.0.0.1:{port}/v2/capabilities")
            assert (await http.get(f"https://hipchat.test:{port}/v2/capabilities")).is_success


@pytest.mark.anyio
async def test_each_name_has_its_own_pool_and_the_oldest_goes_past_the_limit(
    live_hipchat: FakeHipChat,
) -> None:
    port = httpx.URL(live_hipchat.base_url).port
    names = {"one.test": ["127.0.0.1"], "two.test": ["127.0.0.1"]}
    policy = HostPolicy(("*", f"127.0.0.1:{port}"), resolve=resolver(names))
    transport = PinnedTransport(policy, max_pools=1)
    async with httpx.AsyncClient(transport=transport) as http:
        for name in names:
            response = await http.get(f"http://{name}:{port}/v2/capabilities")
            assert response.status_code == 200
            assert list(transport.pools) == [name]
    assert transport.pools == {}


@pytest.mark.anyio
async def test_the_rest_client_and_the_token_endpoint_fail_cleanly_on_a_refused_address() -> None:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={})

    names = {"hipchat.example": ["10.0.0.5"], "empty.example": []}
    policy = HostPolicy(("*",), resolve=resolver(names))
    transport = PinnedTransport(policy, transport=httpx.MockTransport(record))
    async with httpx.AsyncClient(transport=transport) as http:
        hipchat = HipChatClient("https://hipchat.example/v2", token="t", http=http)
        with pytest.raises(UpstreamError, match="internal address"):
            await hipchat.get_room(1)  # a GET, yet not retried: the answer would not change
        installation = Installation(
            oauth_id="client",
            oauth_secret=Secret("secret"),
            group_id=1,
            room_id=None,
            capabilities_url="https://empty.example/v2/capabilities",
            token_url="https://empty.example/v2/oauth/token",
            authorization_url=None,
            api_url="https://empty.example/v2",
            scopes=("send_notification",),
            installed_at=0.0,
        )
        with pytest.raises(TokenError, match="could not be reached"):
            await fetch_token(http, installation, client_credentials(["send_notification"]), now=0)
    assert seen == []


@pytest.mark.anyio
async def test_a_checked_address_is_remembered_for_a_while_not_resolved_per_request() -> None:
    calls: list[str] = []
    clock = [0.0]
    policy = HostPolicy(("*",), resolve=resolver({"hipchat.example": [PUBLIC]}, calls))
    inner = httpx.MockTransport(lambda request: httpx.Response(204))
    transport = PinnedTransport(policy, transport=inner, remember=30, now=lambda: clock[0])
    async with httpx.AsyncClient(transport=transport) as http:
        for _ in range(3):
            await http.get("https://hipchat.example/v2/room")
        assert calls == ["hipchat.example"]
        clock[0] = 31
        await http.get("https://hipchat.example/v2/room")
    assert calls == ["hipchat.example"] * 2
