"""Storage export / import / erase: admin API (bearer ADDON_ADMIN_TOKEN) and CLI."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from addon.cli import main
from addon.settings import Secret, Settings
from addon.store import Keys, Store
from addon.store.sqlite import SQLiteStore
from addon.testing import FakeHipChat, Installed
from tests.helpers import REPO, make_app

pytestmark = pytest.mark.anyio

ADMIN = "admin-token-" + "x" * 20


@pytest.fixture
async def admin_app(
    settings: Settings, store: Store, hipchat: FakeHipChat
) -> AsyncIterator[Starlette]:
    app = make_app(dataclasses.replace(settings, admin_token=Secret(ADMIN)), store, hipchat)
    yield app
    await app.state.addon.aclose()


@pytest.fixture
async def room(
    admin_app: Starlette, hipchat: FakeHipChat, settings: Settings
) -> AsyncIterator[Installed]:
    async with hipchat.connect(admin_app, settings.base_url) as addon:
        yield await hipchat.install(addon, room_id=1)


def bearer(token: str = ADMIN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_export_erase_import_round_trip(hipchat: FakeHipChat, room: Installed) -> None:
    await hipchat.send_message(room, "/remember color blue")
    await hipchat.send_message(room, "/ping")

    exported = (await room.addon.get("/admin/storage", headers=bearer())).json()
    assert exported["storage"][f"{room.oauth_id}/remember"] == {"color": "blue"}
    assert exported["storage"][f"{room.oauth_id}/ping"] == {"count": 1}  # per installation

    erased = await room.addon.delete("/admin/storage", headers=bearer())
    assert erased.json() == {"erased": 2}
    await hipchat.send_message(room, "/recall color")

    imported = await room.addon.put("/admin/storage", json=exported, headers=bearer())
    assert imported.json() == {"imported": 2}
    await hipchat.send_message(room, "/recall color")
    assert (await room.addon.get("/admin/storage", headers=bearer())).json() == exported
    assert hipchat.notifications(room)[-2:] == ["Nothing under 'color'.", "color: blue"]


@pytest.mark.parametrize(
    "headers",
    [{}, bearer("wrong-token-" + "x" * 20), {"Authorization": ADMIN}, bearer(ADMIN + "x")],
    ids=["missing", "wrong", "no-scheme", "longer"],
)
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_admin_endpoints_refuse_missing_and_wrong_tokens(
    hipchat: FakeHipChat, room: Installed, method: str, headers: dict[str, str]
) -> None:
    await hipchat.send_message(room, "/remember color blue")
    response = await room.addon.request(
        method, "/admin/storage", headers=headers, json={"storage": {}}
    )
    assert response.status_code == 401
    assert ADMIN not in response.text
    exported = (await room.addon.get("/admin/storage", headers=bearer())).json()
    assert exported["storage"][f"{room.oauth_id}/remember"] == {"color": "blue"}


async def test_the_admin_api_is_off_without_a_token(addon: httpx.AsyncClient) -> None:
    response = await addon.get("/admin/storage", headers=bearer())
    assert response.status_code == 404
    assert "ADDON_ADMIN_TOKEN" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "document",
    [
        [],
        {"storage": []},
        {"storage": {"../../etc/passwd": {}}},
        {"storage": {"global/../x": {}}},
        {"storage": {"global/echo": "not an object"}},
        {"storage": {"global/echo": {}, "bad name/x": {}}},
    ],
)
async def test_a_bad_import_changes_nothing(
    hipchat: FakeHipChat, room: Installed, document: object
) -> None:
    await hipchat.send_message(room, "/remember color blue")
    before = (await room.addon.get("/admin/storage", headers=bearer())).json()

    response = await room.addon.put("/admin/storage", json=document, headers=bearer())

    assert response.status_code == 400
    assert (await room.addon.get("/admin/storage", headers=bearer())).json() == before


def test_cli_storage_export_import_erase(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ADDON_STORE_URL", f"sqlite:///{tmp_path / 'addon.db'}")
    monkeypatch.setenv("ADDON_CAPABILITIES_PATH", str(REPO / "capabilities"))
    document = {"storage": {"global/ping": {"count": 3}, "abc/remember": {"k": "v"}}}
    (tmp_path / "in.json").write_text(json.dumps(document))

    assert main(["storage", "import", str(tmp_path / "in.json")]) == 0
    assert main(["storage", "export", str(tmp_path / "out.json")]) == 0
    assert json.loads((tmp_path / "out.json").read_text()) == document
    assert main(["storage", "erase"]) == 0
    assert main(["storage", "export"]) == 0
    out = capsys.readouterr().out
    assert "imported 2 storage entries" in out and "erased 2 storage entries" in out
    assert json.loads(out[out.index("{") :]) == {"storage": {}}


def test_cli_check_lists_every_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ADDON_CAPABILITIES_PATH", str(REPO / "capabilities"))
    assert main(["check", "-i", str(REPO / "integrations")]) == 0
    out = capsys.readouterr().out
    for usage in ("/echo <text>", "/remember <key> <value>", "/card", "/ping", "/help"):
        assert usage in out


@pytest.mark.parametrize("content", [None, "{not json"], ids=["missing-file", "not-json"])
def test_cli_storage_import_of_a_bad_file_exits_2(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    content: str | None,
) -> None:
    monkeypatch.setenv("ADDON_STORE_URL", f"sqlite:///{tmp_path / 'addon.db'}")
    monkeypatch.setenv("ADDON_CAPABILITIES_PATH", str(REPO / "capabilities"))
    source = tmp_path / "in.json"
    if content is not None:
        source.write_text(content)
    assert main(["storage", "import", str(source)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hipchat-addon: ") and "Traceback" not in err


def _nested(depth: int) -> str:
    """JSON text of a list nested ``depth`` levels deep (json.dumps cannot write it past ~900)."""
    return "[" * depth + "0" + "]" * depth


@pytest.mark.parametrize("depth", [62, 964])
async def test_an_import_nested_too_deep_is_refused(
    hipchat: FakeHipChat, room: Installed, depth: int
) -> None:
    # {"storage": {"o/i": {"deep": value}}}: the value starts at level 4, so 62 makes 65 levels.
    document = f'{{"storage": {{"{room.oauth_id}/remember": {{"deep": {_nested(depth)}}}}}}}'
    response = await room.addon.put("/admin/storage", content=document, headers=bearer())
    assert response.status_code == 400
    assert "nests deeper than 64" in response.json()["error"]["message"]
    assert (await room.addon.get("/admin/storage", headers=bearer())).json() == {"storage": {}}


async def test_export_answers_whatever_is_stored(
    hipchat: FakeHipChat, room: Installed, store: Store
) -> None:
    keys = Keys("io.hipchat-addon")
    deep = f'{{"deep": {_nested(964)}}}'
    await store.put(keys.legacy_storage("global", "old"), deep)  # written before the cap
    await store.map_update(keys.storage(room.oauth_id, "kv"), {"deep": deep, "bad": "{not json"})
    await hipchat.send_message(room, "/remember color blue")

    response = await room.addon.get("/admin/storage", headers=bearer())

    assert response.status_code == 200
    # Too deep for Python to parse: fold the deep lists into 0 to read the rest.
    assert response.text.count(_nested(964)) == 2
    exported = json.loads(response.text.replace(_nested(964), "0"))
    assert exported == {
        "storage": {
            "global/old": {"deep": 0},
            f"{room.oauth_id}/kv": {"deep": {"deep": 0}},
            f"{room.oauth_id}/remember": {"color": "blue"},
        },
        "unreadable": [f"{room.oauth_id}/kv/bad"],
    }


async def test_the_older_one_document_format_is_exported_and_replaced_by_an_import(
    hipchat: FakeHipChat, room: Installed, store: Store
) -> None:
    keys = Keys("io.hipchat-addon")
    await store.put(keys.legacy_storage(room.oauth_id, "remember"), '{"color": "red"}')
    exported = (await room.addon.get("/admin/storage", headers=bearer())).json()
    assert exported == {"storage": {f"{room.oauth_id}/remember": {"color": "red"}}}

    document = {"storage": {f"{room.oauth_id}/remember": {"shape": "round"}}}
    assert (await room.addon.put("/admin/storage", json=document, headers=bearer())).json() == {
        "imported": 1
    }
    assert (await room.addon.get("/admin/storage", headers=bearer())).json() == document
    await hipchat.send_message(room, "/recall color")
    assert hipchat.notifications(room)[-1] == "Nothing under 'color'."


def test_cli_migrate_global_moves_seed_storage_to_one_installation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ADDON_STORE_URL", f"sqlite:///{tmp_path / 'addon.db'}")
    monkeypatch.setenv("ADDON_CAPABILITIES_PATH", str(REPO / "capabilities"))
    document = {"storage": {"global/ping": {"count": 3}, "abc/remember": {"k": "v"}}}
    (tmp_path / "in.json").write_text(json.dumps(document))
    assert main(["storage", "import", str(tmp_path / "in.json")]) == 0

    assert main(["storage", "migrate-global", "--to", "abc"]) == 2  # not installed
    assert "No installation 'abc'" in capsys.readouterr().err
    store = SQLiteStore(f"sqlite:///{tmp_path / 'addon.db'}")
    asyncio.run(store.put(Keys("io.hipchat-addon").installation("abc"), "{}"))
    assert main(["storage", "migrate-global", "--to", "abc"]) == 0
    assert main(["storage", "export", str(tmp_path / "out.json")]) == 0

    assert "moved 1 global storage entries to abc" in capsys.readouterr().out
    assert json.loads((tmp_path / "out.json").read_text()) == {
        "storage": {"abc/ping": {"count": 3}, "abc/remember": {"k": "v"}}
    }


# --- the older server's POST / save FILE | load FILE | erase -----------------------------------


@pytest.fixture
async def files_room(
    settings: Settings, store: Store, hipchat: FakeHipChat, tmp_path: Path
) -> AsyncIterator[Installed]:
    configured = dataclasses.replace(
        settings, admin_token=Secret(ADMIN), storage_files_path=tmp_path / "files"
    )
    app = make_app(configured, store, hipchat)
    async with hipchat.connect(app, settings.base_url) as addon:
        yield await hipchat.install(addon, room_id=1)
    await app.state.addon.aclose()


async def test_post_save_erase_load_round_trip_through_a_file(
    hipchat: FakeHipChat, files_room: Installed, tmp_path: Path
) -> None:
    await hipchat.send_message(files_room, "/remember color blue")

    async def post(body: str) -> httpx.Response:
        return await files_room.addon.post("/", content=body, headers=bearer())

    saved = await post("save backup.json")
    assert saved.json() == {"saved": "backup.json", "entries": 1}
    written = json.loads((tmp_path / "files" / "backup.json").read_text())
    assert written["storage"][f"{files_room.oauth_id}/remember"] == {"color": "blue"}

    assert (await post("erase")).json() == {"erased": 1}
    await hipchat.send_message(files_room, "/recall color")
    assert (await post("load backup.json")).json() == {"loaded": "backup.json", "imported": 1}
    await hipchat.send_message(files_room, "/recall color")
    assert hipchat.notifications(files_room)[-2:] == ["Nothing under 'color'.", "color: blue"]


@pytest.mark.parametrize("body", ["save backup.json", "load backup.json", "erase"])
@pytest.mark.parametrize(
    "headers", [{}, bearer("wrong-token-" + "x" * 20)], ids=["missing", "wrong"]
)
async def test_post_commands_need_the_admin_token(
    files_room: Installed, tmp_path: Path, body: str, headers: dict[str, str]
) -> None:
    await files_room.addon.post("/", content="save backup.json", headers=bearer())
    response = await files_room.addon.post("/", content=body, headers=headers)
    assert response.status_code == 401
    assert "ADDON_ADMIN_TOKEN" in response.json()["error"]["message"]
    assert sorted(p.name for p in (tmp_path / "files").iterdir()) == ["backup.json"]


@pytest.mark.parametrize(
    "name",
    ["../escape.json", "/tmp/escape.json", "sub/escape.json", "..", ".hidden", "a\\b", "x" * 101],
)
@pytest.mark.parametrize("verb", ["save", "load"])
async def test_post_file_names_never_leave_the_folder(
    files_room: Installed, tmp_path: Path, verb: str, name: str
) -> None:
    response = await files_room.addon.post("/", content=f"{verb} {name}", headers=bearer())
    assert response.status_code == 400
    assert "bare name" in response.json()["error"]["message"]
    assert not (tmp_path / "escape.json").exists() and not (tmp_path / "files").exists()


@pytest.mark.parametrize("body", ["", "save", "save a b", "dump x", "erase now"])
async def test_post_other_bodies_get_a_400_naming_the_commands(
    files_room: Installed, body: str
) -> None:
    response = await files_room.addon.post("/", content=body, headers=bearer())
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "RequestError"
    assert "'save FILE', 'load FILE' or 'erase'" in response.json()["error"]["message"]


async def test_post_bodies_past_their_cap_get_a_413(files_room: Installed) -> None:
    # The same streaming body cap as every other route (BodyTooLarge, a RequestError).
    response = await files_room.addon.post("/", content="x" * 2000, headers=bearer())
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "BodyTooLarge"


async def test_post_load_of_a_missing_or_broken_file(files_room: Installed, tmp_path: Path) -> None:
    missing = await files_room.addon.post("/", content="load nothing.json", headers=bearer())
    assert missing.status_code == 404
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "broken.json").write_text("{not json")
    broken = await files_room.addon.post("/", content="load broken.json", headers=bearer())
    assert broken.status_code == 400 and "not JSON" in broken.json()["error"]["message"]


async def test_post_is_off_without_an_admin_token(addon: httpx.AsyncClient) -> None:
    response = await addon.post("/", content="erase", headers=bearer())
    assert response.status_code == 404


async def test_post_save_into_an_unusable_folder_says_which_setting(
    settings: Settings, store: Store, hipchat: FakeHipChat, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    configured = dataclasses.replace(
        settings, admin_token=Secret(ADMIN), storage_files_path=blocker / "files"
    )
    app = make_app(configured, store, hipchat)
    async with hipchat.connect(app, settings.base_url) as addon:
        response = await addon.post("/", content="save backup.json", headers=bearer())
    await app.state.addon.aclose()
    assert response.status_code == 500
    assert "ADDON_STORAGE_FILES_PATH" in response.json()["error"]["message"]
