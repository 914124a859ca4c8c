"""Seed-style scripts run unchanged; a 6-argument one POSTs with ``token`` and reaches HipChat.

The fake HipChat runs on a real socket here, because the script calls it with urllib, as scripts
written for the older server did.
"""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

from addon.app import create_app
from addon.settings import Settings
from addon.store import Store
from addon.testing import FakeHipChat

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

SCRIPTS = {
    "two.py": """
        def run_integration(notification, query):
            return "two says " + query
    """,
    "three.py": """
        def run_integration(notification, query, all_tokens):
            return "three sees " + ",".join(sorted(all_tokens))
    """,
    "six.py": """
        import json
        import urllib.request

        def run_integration(notification, query, all_tokens, token, storage, log):
            url = notification.item.room.links["self"] + "/notification"
            body = json.dumps({"message": "six posted " + query}).encode()
            request = urllib.request.Request(url, data=body, method="POST", headers={
                "Authorization": "Bearer " + token, "Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=5) as response:
                storage["status"] = response.status
            log.info("posted")
    """,
}


async def test_seed_scripts_in_their_two_three_and_six_argument_forms(
    tmp_path: Path, settings: Settings, store: Store, live_hipchat: FakeHipChat
) -> None:
    for name, source in SCRIPTS.items():
        (tmp_path / name).write_text(textwrap.dedent(source))
    host = live_hipchat.base_url.removeprefix("http://")
    configured = dataclasses.replace(
        settings,
        integrations_path=tmp_path,
        hipchat_hosts=(host,),
        static_tokens=("weather:abc", "9:other:def"),
    )
    app = create_app(configured, store=store)  # real sockets towards the fake
    async with live_hipchat.connect(app, settings.base_url) as addon:
        room = await live_hipchat.install(addon, room_id=1)
        two = await live_hipchat.send_message(room, "/two hello")
        three = await live_hipchat.send_message(room, "/three")
        six = await live_hipchat.send_message(room, "/six from the past")
    await app.state.addon.aclose()

    assert two is not None and two.json()["message"] == "two says hello"
    assert three is not None and three.json()["message"] == "three sees 9:other,weather"
    assert six is not None and six.status_code == 204
    assert live_hipchat.notifications(1)[-1] == "six posted from the past"
    posted = live_hipchat.api.requests_for("send_room_notification")[-1]
    token = posted.headers["authorization"].removeprefix("Bearer ")
    assert live_hipchat.is_valid_token(token)
