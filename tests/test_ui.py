"""UI extensions: descriptor, signed glances and pages, page tokens, settings, pushes, static."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import httpx
import jwt
import pytest
from starlette.applications import Starlette

from addon import AddonError, Glance, Icon, Integration, IntegrationError, Lozenge, Page, UIRequest
from addon.hipchat import HipChatClient
from addon.jwt_auth import sign_jwt
from addon.settings import Settings
from addon.store import Store
from addon.testing import FakeHipChat, FakeRestAPI, Installed
from addon.ui.descriptor import descriptor_entries
from addon.ui.request import DynamicExtensions, page_key
from tests.helpers import REPO, settings_for, store_snapshot

pytestmark = pytest.mark.anyio

GLANCE = "http://addon.test/ui/remember/glance/remember-count"
PANEL = "http://addon.test/ui/remember/panel/remember-panel"
CONFIGURE = "http://addon.test/ui/remember/configure"


async def _room(hipchat: FakeHipChat, addon: httpx.AsyncClient, room_id: int = 1) -> Installed:
    return await hipchat.install(addon, room_id=room_id)


def _url_for(path: str) -> str:
    return "http://addon.test" + path


# -- declaration and descriptor ------------------------------------------------------------


async def test_the_descriptor_declares_the_ui_with_absolute_urls(
    hipchat: FakeHipChat, addon: httpx.AsyncClient
) -> None:
    capabilities = (await hipchat.descriptor(addon))["capabilities"]
    (glance,) = capabilities["glance"]
    assert glance["queryUrl"] == GLANCE
    assert glance["icon"] == {
        "url": "http://addon.test/static/remember/icons/note.png",
        "url@2x": "http://addon.test/static/remember/icons/note@2x.png",
    }
    assert glance["target"] == "remember-panel"
    assert capabilities["webPanel"][0]["url"] == PANEL
    assert capabilities["dialog"][0]["options"]["primaryAction"]["key"] == "add"
    assert capabilities["action"][0]["target"] == "remember-add"
    assert capabilities["configurable"] == {"url": CONFIGURE}


async def _noop(request: UIRequest) -> Page:
    return Page("x.html")


def test_a_bad_key_is_refused_naming_the_integration() -> None:
    integration = Integration("notes")
    with pytest.raises(IntegrationError, match=r"'notes'.*key must be 1-40"):
        integration.web_panel("Bad Key!", name="x")(_noop)
    with pytest.raises(IntegrationError, match="key must be 1-40"):
        integration.web_panel("x" * 41, name="x")(_noop)


def test_an_icon_needs_both_resolutions(tmp_path: Path) -> None:
    integration = Integration("notes", assets=tmp_path)
    with pytest.raises(ValueError, match="both 'url' and 'url@2x'"):
        integration.glance("g", name="G", icon={"url": "a.png"})
    (tmp_path / "static").mkdir()
    (tmp_path / "static" / "a.png").write_bytes(b"png")
    integration.glance("g", name="G", icon="a.png")(_noop)  # a.png and a@2x.png
    with pytest.raises(IntegrationError, match=r"'notes', glance 'g': icon file 'a@2x.png'"):
        descriptor_entries([integration], _url_for)


def test_a_target_must_name_a_panel_dialog_or_page(tmp_path: Path) -> None:
    integration = Integration("notes", assets=tmp_path)
    integration.action("act", name="Act", target="nowhere")
    with pytest.raises(IntegrationError, match=r"target 'nowhere' names no web panel"):
        descriptor_entries([integration], _url_for)
    other = Integration("other", assets=tmp_path)
    other.dialog("nowhere", title="Here")(_noop)
    assert descriptor_entries([integration, other], _url_for)["action"][0]["target"] == "nowhere"


def test_one_configuration_page_per_addon(tmp_path: Path) -> None:
    first, second = Integration("a", assets=tmp_path), Integration("b", assets=tmp_path)
    first.configure(_noop)
    second.configure(_noop)
    with pytest.raises(IntegrationError, match=r"Only one configuration page.*'a', 'b'"):
        descriptor_entries([first, second], _url_for)


def test_handlers_and_settings_are_checked_when_declared() -> None:
    integration = Integration("notes")

    def not_async(request: UIRequest) -> Page:
        return Page("x.html")

    with pytest.raises(TypeError, match="async def"):
        integration.web_panel("p", name="P")(not_async)  # type: ignore[type-var]
    with pytest.raises(IntegrationError, match="location"):
        integration.action("a", name="A", target="p", location="hipchat.sidebar")

    @dataclasses.dataclass(frozen=True)
    class NoDefault:
        name: str

    with pytest.raises(TypeError, match="setting 'name' must be str, int, float or bool"):
        Integration("x", settings=NoDefault)


# -- signed glances ------------------------------------------------------------------------


async def test_a_signed_glance_gets_its_data(
    hipchat: FakeHipChat, addon: httpx.AsyncClient
) -> None:
    room = await _room(hipchat, addon)
    assert (await hipchat.glance(room, "remember-count"))["label"] == {
        "type": "html",
        "value": "0 notes",
    }
    await hipchat.send_message(room, "/remember a 1")
    assert (await hipchat.glance(room, "remember-count"))["label"]["value"] == "1 note"


def _forged(room: Installed) -> str:
    return sign_jwt(
        room.oauth_id,
        "not-the-secret-but-as-long-as-one-is-x",
        now=time.time(),
        sub=1001,
        room_id=1,
    )


def _expired(room: Installed) -> str:
    return sign_jwt(room.oauth_id, room.oauth_secret, now=time.time() - 3600, sub=1001, room_id=1)


BAD = [
    ("forged", _forged),
    ("expired", _expired),
    ("missing", lambda room: ""),
    ("unknown-issuer", lambda room: sign_jwt("nobody", room.oauth_secret, now=time.time())),
    (
        "no-jti",
        lambda room: jwt.encode(
            {"iss": room.oauth_id, "iat": int(time.time()), "exp": int(time.time()) + 60},
            room.oauth_secret,
        ),
    ),
]


@pytest.mark.parametrize(("case", "make"), BAD, ids=[case for case, _ in BAD])
async def test_a_bad_token_gets_401_json_on_glances(
    hipchat: FakeHipChat, addon: httpx.AsyncClient, case: str, make: Any
) -> None:
    room = await _room(hipchat, addon)
    response = await hipchat.ui_get(room, GLANCE, token=make(room))
    assert response.status_code == 401
    assert response.json()["error"]["status"] == 401
    assert "label" not in response.text


@pytest.mark.parametrize(("case", "make"), BAD, ids=[case for case, _ in BAD])
async def test_a_bad_token_gets_401_html_on_pages(
    hipchat: FakeHipChat, addon: httpx.AsyncClient, case: str, make: Any
) -> None:
    room = await _room(hipchat, addon)
    response = await hipchat.ui_get(room, PANEL, token=make(room))
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("text/html")
    assert "addon-token" not in response.text and "Notes" not in response.text


async def test_a_replayed_token_gets_401(hipchat: FakeHipChat, addon: httpx.AsyncClient) -> None:
    room = await _room(hipchat, addon)
    token = hipchat.signed_request(room)
    assert (await hipchat.ui_get(room, GLANCE, token=token)).status_code == 200
    assert (await hipchat.ui_get(room, GLANCE, token=token)).status_code == 401
    assert (await hipchat.ui_get(room, PANEL, token=token)).status_code == 401


async def test_a_room_installation_refuses_another_rooms_token(
    hipchat: FakeHipChat, addon: httpx.AsyncClient
) -> None:
    room = await _room(hipchat, addon, room_id=5)
    assert (await hipchat.ui_get(room, GLANCE, room=6)).status_code == 401
    assert (await hipchat.ui_get(room, GLANCE, room=5)).status_code == 200


async def test_glances_answer_cors_for_the_hipchat_client_only(
    hipchat: FakeHipChat, addon: httpx.AsyncClient
) -> None:
    room = await _room(hipchat, addon)
    ok = await hipchat.ui_get(room, GLANCE, origin="http://hipchat.test")
    assert ok.headers["access-control-allow-origin"] == "http://hipchat.test"
    assert "Origin" in ok.headers["vary"]
    evil = await hipchat.ui_get(room, GLANCE, origin="http://evil.test")
    assert "access-control-allow-origin" not in evil.headers


async def test_glances_answer_preflights(hipchat: FakeHipChat, addon: httpx.AsyncClient) -> None:
    headers = {"Origin": "http://hipchat.test", "Access-Control-Request-Method": "GET"}
    response = await addon.options(GLANCE, headers=headers)
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "http://hipchat.test"
    assert "GET" in response.headers["access-control-allow-methods"]
    evil = await addon.options(GLANCE, headers={**headers, "Origin": "http://evil.test"})
    assert "access-control-allow-origin" not in evil.headers


# -- pages -----------------------------------------------------------------------------------


async def test_pages_may_be_framed_by_the_installations_hipchat_only(
    hipchat: FakeHipChat, addon: httpx.AsyncClient
) -> None:
    room = await _room(hipchat, addon)
    await hipchat.send_message(room, "/remember <b>x</b> <script>1</script>")
    page = await hipchat.page(room, "remember-panel")
    headers = page.response.headers
    assert headers["content-security-policy"] == "frame-ancestors http://hipchat.test"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert "&lt;script&gt;1&lt;/script&gt;" in page.html and "<script>1" not in page.html
    assert "http://hipchat.test/atlassian-connect/all.js" in page.html


async def test_a_page_embeds_a_short_lived_token_for_its_user_and_room(
    hipchat: FakeHipChat, addon: httpx.AsyncClient
) -> None:
    room = await _room(hipchat, addon)
    page = await hipchat.page(room, "remember-add", user=42)
    key = page_key(room.oauth_secret)
    claims = jwt.decode(page.token, key, algorithms=["HS256"], audience="addon-page:remember")
    assert claims["iss"] == room.oauth_id and claims["sub"] == "42"
    assert claims["context"]["room_id"] == 1 and claims["context"]["user_tz"] == "Europe/Paris"
    assert 0 < claims["exp"] - claims["iat"] <= 900


async def test_a_page_token_calls_the_pages_api_but_loads_no_page(
    hipchat: FakeHipChat, addon: httpx.AsyncClient
) -> None:
    room = await _room(hipchat, addon)
    page = await hipchat.page(room, "remember-add")
    added = await page.call("POST", "/api/notes", json={"key": "k", "value": "v"})
    assert added.json() == {"ok": True, "message": "Remembered k."}
    again = await page.call("POST", "/api/notes", json={"key": "k2", "value": "v"})
    assert again.status_code == 200  # reusable until it expires, unlike HipChat's tokens
    assert (await hipchat.ui_get(room, PANEL, token=page.token)).status_code == 401
    assert (await hipchat.ui_get(room, GLANCE, token=page.token)).status_code == 401
    await hipchat.send_message(room, "/recall k")
    assert hipchat.notifications(room)[-1] == "k: v"


async def test_a_page_api_refuses_a_missing_or_foreign_token(
    hipchat: FakeHipChat, addon: httpx.AsyncClient
) -> None:
    room = await _room(hipchat, addon)
    page = await hipchat.page(room, "remember-add")
    missing = await addon.post("/ui/remember/api/notes", json={"key": "k", "value": "v"})
    assert missing.status_code == 401 and missing.json()["error"]["type"] == "InvalidJWT"
    now, key = time.time(), page_key(room.oauth_secret)
    foreign = sign_jwt(room.oauth_id, key, now=now, extra={"aud": "addon-page:echo"})
    assert (await page.call("POST", "/api/notes", json={}, token=foreign)).status_code == 401
    raw = sign_jwt(room.oauth_id, room.oauth_secret, now=now, extra={"aud": "addon-page:remember"})
    assert (await page.call("POST", "/api/notes", json={}, token=raw)).status_code == 401
    too_long = sign_jwt(
        room.oauth_id, key, now=now, lifetime=3600, extra={"aud": "addon-page:remember"}
    )
    assert (await page.call("POST", "/api/notes", json={}, token=too_long)).status_code == 401
    unknown = await page.call("POST", "/api/nothing", json={})
    assert unknown.status_code == 404


async def test_a_page_token_never_passes_as_a_webhook_from_hipchat(
    hipchat: FakeHipChat, addon: httpx.AsyncClient
) -> None:
    room = await _room(hipchat, addon)
    page = await hipchat.page(room, "remember-add", user=1001)
    response = await hipchat.send_message(room, "/recall k", token=page.token)
    assert response is not None and response.status_code == 401


# -- settings ----------------------------------------------------------------------------------


async def test_settings_are_saved_per_installation_and_read_by_the_command(
    hipchat: FakeHipChat, addon: httpx.AsyncClient
) -> None:
    one, two = await _room(hipchat, addon, 1), await _room(hipchat, addon, 2)
    page = await hipchat.page(one, "configurable")
    assert 'value="Remembered"' in page.html
    saved = await page.call("POST", "/config", json={"confirmation": "Noted"})
    assert saved.json() == {"confirmation": "Noted"}
    await hipchat.send_message(one, "/remember a 1")
    await hipchat.send_message(two, "/remember a 1")
    assert hipchat.notifications(one)[-1] == "Noted a."
    assert hipchat.notifications(two)[-1] == "Remembered a."
    assert 'value="Noted"' in (await hipchat.page(one, "configurable")).html


@pytest.mark.parametrize(
    ("submitted", "message"),
    [
        ({"confirmation": 3}, "'confirmation' must be a str"),
        ({"colour": "red"}, "Unknown setting 'colour'"),
        (["confirmation"], "must be a JSON object"),
        ({"confirmation": "x" * 1001}, "longer than 1000"),
    ],
    ids=["wrong-type", "unknown", "not-an-object", "too-long"],
)
async def test_bad_settings_get_400_naming_the_setting(
    hipchat: FakeHipChat, addon: httpx.AsyncClient, submitted: object, message: str
) -> None:
    room = await _room(hipchat, addon)
    page = await hipchat.page(room, "configurable")
    response = await page.call("POST", "/config", json=submitted)
    assert response.status_code == 400
    assert message in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("context", "status"),
    [
        ({"user_is_admin": False, "user_is_room_owner": False}, 403),
        ({"user_is_admin": False, "user_is_room_owner": True}, 200),
        ({"user_is_admin": True}, 200),
        ({}, 200),
    ],
    ids=["neither", "room-owner", "admin", "not-said"],
)
async def test_room_settings_are_changed_by_admins_when_hipchat_says_so(
    hipchat: FakeHipChat, addon: httpx.AsyncClient, context: dict[str, bool], status: int
) -> None:
    room = await _room(hipchat, addon)
    page = await hipchat.page(room, "configurable", context=context)
    response = await page.call("POST", "/config", json={"confirmation": "Hi"})
    assert response.status_code == status


async def test_uninstall_forgets_the_settings(
    hipchat: FakeHipChat, addon: httpx.AsyncClient, store: Store
) -> None:
    room = await _room(hipchat, addon)
    page = await hipchat.page(room, "configurable")
    await page.call("POST", "/config", json={"confirmation": "Noted"})
    assert any(":config:" in key for key in await store_snapshot(store))
    await hipchat.uninstall(addon, room)
    assert not [key for key in await store_snapshot(store) if room.oauth_id in key]


# -- glance pushes and dynamic extensions -------------------------------------------------


async def test_a_glance_push_reaches_hipchat_with_the_addon_token(
    hipchat: FakeHipChat, addon: httpx.AsyncClient
) -> None:
    room = await _room(hipchat, addon)
    page = await hipchat.page(room, "remember-add")
    await page.call("POST", "/api/notes", json={"key": "k", "value": "v"})
    (push,) = hipchat.glance_pushes()
    assert push.room == "1" and push.user is None
    assert push.glances == [
        {"key": "remember-count", "content": {"label": {"type": "html", "value": "1 note"}}}
    ]
    assert hipchat.is_valid_token(push.token)
    assert hipchat.tokens[push.token].user_id is None  # the add-on's token, not a user's


async def test_dynamic_extensions_are_added_and_removed() -> None:
    api = FakeRestAPI()
    transport = httpx.ASGITransport(app=Starlette(routes=[api.mount("/v2")]))
    async with HipChatClient("http://hipchat.test/v2/", token="t", transport=transport) as client:
        extensions = DynamicExtensions(client)
        entry = {"name": {"value": "Extra"}, "queryUrl": "https://addon.example/g"}
        await extensions.put("glance", "extra", entry, room=1)
        await extensions.put("dialog", "more", {"title": {"value": "More"}})
        await extensions.delete("glance", "extra", room=1)
    operations = [r.operation for r in api.requests]
    assert operations == ["create_room_glance", "create_global_dialog", "delete_room_glance"]


def test_glance_values_serialise_as_hipchat_expects() -> None:
    glance = Glance("<3 & co", status=Lozenge("NEW", "new"), metadata={"n": 1})
    assert glance.to_json() == {
        "label": {"type": "html", "value": "&lt;3 &amp; co"},
        "status": {"type": "lozenge", "value": {"label": "NEW", "type": "new"}},
        "metadata": {"n": 1},
    }
    with pytest.raises(ValueError, match="Lozenge type 'pink'"):
        Lozenge("x", "pink")


# -- static files ------------------------------------------------------------------------------


async def test_static_files_have_etags_and_cache_headers(addon: httpx.AsyncClient) -> None:
    response = await addon.get("/static/remember/icons/note.png")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.content == (REPO / "integrations/remember/static/icons/note.png").read_bytes()
    assert "max-age" in response.headers["cache-control"]
    etag = response.headers["etag"]
    again = await addon.get("/static/remember/icons/note.png", headers={"If-None-Match": etag})
    assert again.status_code == 304 and not again.content


async def _raw_get(app: Starlette, raw_path: str) -> int:
    """GET ``raw_path`` byte for byte (httpx would normalise the dots away)."""
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "server": ("addon.test", 80),
        "path": unquote(raw_path),
        "raw_path": raw_path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"addon.test")],
        "client": ("127.0.0.1", 1),
    }
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await app(scope, receive, send)
    return statuses[0]


TRAVERSALS = [
    "/static/remember/../remember.py",
    "/static/remember/icons/../../remember.py",
    "/static/remember/%2e%2e/remember.py",
    "/static/remember/%2e%2e%2fremember.py",
    "/static/remember/icons%2f..%2f..%2fremember.py",
    "/static/remember/..%5cremember.py",
    "/static/remember/\\..\\remember.py",
    "/static/remember//etc/passwd",
    "/static/remember/" + quote("/etc/passwd", safe=""),
    "/static/remember/.hidden",
    "/static/remember/C:%5cwindows",
    "/static/nobody/icons/note.png",
]


@pytest.mark.parametrize("raw_path", TRAVERSALS)
async def test_static_paths_never_leave_the_folder(app: Starlette, raw_path: str) -> None:
    assert await _raw_get(app, raw_path) == 404
    assert await _raw_get(app, "/static/remember/icons/note.png") == 200


@dataclasses.dataclass(frozen=True)
class Flags:
    greeting: str = "hello"
    limit: int = 3
    ratio: float = 0.5
    loud: bool = False


async def test_settings_read_back_typed_and_validated(store: Store, settings: Settings) -> None:
    from addon.store import Keys
    from addon.ui.config import ConfigStore

    integration = Integration("flags", settings=Flags)
    assert integration.settings_type(Flags) is Flags
    with pytest.raises(TypeError, match="declares settings 'Flags', not 'int'"):
        integration.settings_type(int)
    configs, fields = ConfigStore(store, Keys("t")), integration.settings_fields
    await store.put(Keys("t").installation("o1"), "{}")  # settings are kept while it is installed
    assert [f.input_type for f in fields] == ["text", "number", "number", "checkbox"]
    saved = await configs.save("o1", "flags", fields, {"limit": 5, "ratio": 2, "loud": True})
    assert saved == {"greeting": "hello", "limit": 5, "ratio": 2.0, "loud": True}
    assert Flags(**await configs.load("o1", "flags", fields)) == Flags("hello", 5, 2.0, True)
    with pytest.raises(AddonError, match="'limit' must be a int"):
        await configs.save("o1", "flags", fields, {"limit": True})


def _readme_example() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index("# integrations/notes.py")
    return text[start : text.index("```", start)]


async def test_the_readme_example_works(tmp_path: Path, store: Store, hipchat: FakeHipChat) -> None:
    from addon.app import create_app
    from addon.integrations import load_integrations

    code = _readme_example()
    assert len(code.splitlines()) <= 30
    folder = tmp_path / "integrations"
    (folder / "notes" / "static" / "icons").mkdir(parents=True)
    (folder / "notes.py").write_text(code)
    for name in ("note.png", "note@2x.png"):
        (folder / "notes" / "static" / "icons" / name).write_bytes(b"\x89PNG")
    settings = settings_for(ADDON_INTEGRATIONS_PATH=str(folder))
    app = create_app(
        settings, store=store, transport=hipchat.transport(), integrations=load_integrations(folder)
    )
    try:
        async with hipchat.connect(app, settings.base_url) as addon:
            room = await hipchat.install(addon, room_id=1)
            page = await hipchat.page(room, "configurable")
            assert (await page.call("POST", "/config", json={"reply": "OK!"})).status_code == 200
            await hipchat.send_message(room, "/note milk")
            assert hipchat.notifications(room) == ["OK!"]
            assert (await hipchat.glance(room, "notes"))["label"]["value"] == "1 notes"
    finally:
        await app.state.addon.aclose(grace=5)


async def test_a_command_pushes_a_glance_to_one_user(
    tmp_path: Path, store: Store, hipchat: FakeHipChat, settings: Settings
) -> None:
    from addon.app import create_app
    from addon.context import RoomMessage

    (tmp_path / "static").mkdir()
    for name in ("i.png", "i@2x.png"):
        (tmp_path / "static" / name).write_bytes(b"\x89PNG")
    integration = Integration("pusher", assets=tmp_path)

    @integration.glance("mine", name="Mine", icon="i.png")
    async def mine(request: UIRequest) -> Glance:
        return Glance("0")

    @integration.command("push")
    async def push(message: RoomMessage) -> None:
        status = Icon("i.png", "i@2x.png")
        await message.glances.update("mine", Glance("7", status=status), user=message.sender.id)
        with pytest.raises(ValueError, match="declares no glance 'other'"):
            await message.glances.update("other", Glance("x"))

    app = create_app(
        settings, store=store, transport=hipchat.transport(), integrations=[integration]
    )
    try:
        async with hipchat.connect(app, settings.base_url) as addon:
            room = await hipchat.install(addon, room_id=1)
            await hipchat.send_message(room, "/push", sender_id=77)
    finally:
        await app.state.addon.aclose(grace=5)
    (pushed,) = hipchat.glance_pushes()
    assert pushed.user == "77" and pushed.room is None
    icon = {
        "url": "http://addon.test/static/pusher/i.png",
        "url@2x": "http://addon.test/static/pusher/i@2x.png",
    }
    assert pushed.glances[0]["content"]["status"] == {"type": "icon", "value": icon}


def _installation(capabilities_url: str, api_url: str) -> Any:
    from addon.installations import Installation
    from addon.settings import Secret

    return Installation(
        oauth_id="o",
        oauth_secret=Secret("s"),
        group_id=1,
        room_id=None,
        capabilities_url=capabilities_url,
        token_url=api_url + "oauth/token",
        authorization_url=None,
        api_url=api_url,
        scopes=("send_notification",),
        installed_at=0.0,
    )


def test_hipchat_cloud_origins_cover_the_groups_subdomains() -> None:
    from addon.ui.origins import frame_ancestors, hipchat_js_base, is_hipchat_origin

    cloud = _installation("https://api.hipchat.com/v2/capabilities", "https://api.hipchat.com/v2/")
    addon_origin = "https://addon.example"
    for origin in ("https://www.hipchat.com", "https://acme.hipchat.com", addon_origin):
        assert is_hipchat_origin(origin, cloud, addon_origin), origin
    for origin in (
        "http://acme.hipchat.com",
        "https://evilhipchat.com",
        "https://hipchat.com.evil",
    ):
        assert not is_hipchat_origin(origin, cloud, addon_origin), origin
    assert frame_ancestors(cloud) == "https://api.hipchat.com https://*.hipchat.com"
    assert hipchat_js_base(cloud) == "https://www.hipchat.com/atlassian-connect"
    server = _installation("https://chat.corp:8443/v2/capabilities", "https://chat.corp:8443/v2/")
    assert frame_ancestors(server) == "https://chat.corp:8443"
    assert not is_hipchat_origin("https://x.chat.corp:8443", server, addon_origin)
    assert hipchat_js_base(server) == "https://chat.corp:8443/atlassian-connect"


def test_conditions_pass_through_and_external_pages_get_urls(tmp_path: Path) -> None:
    integration = Integration("notes", assets=tmp_path)
    integration.external_page("notes-site", name="Notes site")(_noop)
    public = {"condition": "room_is_public", "invert": True}
    integration.action(
        "open",
        name="Open",
        target="notes-site",
        location="hipchat.input.action",
        conditions=[public],
    )
    entries = descriptor_entries([integration], _url_for)
    assert entries["externalPage"] == [
        {
            "key": "notes-site",
            "name": {"value": "Notes site"},
            "url": "http://addon.test/ui/notes/page/notes-site",
        }
    ]
    assert entries["action"][0]["conditions"] == [public]
    assert entries["action"][0]["location"] == "hipchat.input.action"
