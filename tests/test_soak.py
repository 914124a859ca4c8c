"""The soak with faults (``bench/soak``), in its short CI form, and the pieces it relies on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from addon.testing import FakeHipChat
from bench.cluster_kit import find_nginx
from bench.soak import classify
from tests.helpers import REPO


def _reply(status: int, message: str | None = None, **headers: str) -> httpx.Response:
    if message is None:
        return httpx.Response(status, headers=headers)
    return httpx.Response(status, json={"message": message}, headers=headers)


@pytest.mark.parametrize(
    ("response", "outcome"),
    [
        (_reply(200, "tallied m1"), "ok"),
        (_reply(204), "ok"),
        (_reply(200, "/counter failed: the add-on's store is unavailable; try again"), "declined"),
        (_reply(502), "retryable"),
        (_reply(504), "retryable"),
        (_reply(503, **{"Retry-After": "5"}), "retryable"),
        (None, "retryable"),  # a transport error: refused, reset, timed out
        (_reply(503), "failure"),  # without Retry-After nobody knows when to come back
        (_reply(500), "failure"),
        (_reply(501), "failure"),
        (_reply(401), "failure"),
    ],
)
def test_the_soak_counts_only_dead_peer_and_store_down_answers_as_retryable(
    response: httpx.Response | None, outcome: str
) -> None:
    assert classify(response) == outcome


@pytest.mark.anyio
async def test_the_fake_token_endpoint_answers_the_outage_status_while_it_lasts() -> None:
    hipchat = FakeHipChat()
    client = hipchat.new_client()
    form = {"grant_type": "client_credentials", "scope": "send_notification"}
    auth = (client.oauth_id, client.oauth_secret)
    async with httpx.AsyncClient(transport=hipchat.transport(), base_url=hipchat.base_url) as api:
        hipchat.token_outage = 429
        refused = [await api.post("/v2/oauth/token", data=form, auth=auth) for _ in range(3)]
        hipchat.token_outage = None
        granted = await api.post("/v2/oauth/token", data=form, auth=auth)
    assert [r.status_code for r in refused] == [429, 429, 429]
    assert granted.status_code == 200 and granted.json()["access_token"]


@pytest.mark.system
def test_a_short_soak_with_faults_loses_nothing_and_never_answers_500(tmp_path: Path) -> None:
    if find_nginx() is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light); .ci/run installs it")
    command = [sys.executable, "-m", "bench.soak", "--seconds", "30", "--output", str(tmp_path)]
    result = subprocess.run(
        [*command, "--no-png", "--installations", "20"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    report = json.loads((tmp_path / "soak.json").read_text())
    checks = report["checks"]
    phases = {phase["name"]: phase for phase in report["phases"]}
    # Everything that went wrong at once, so that one failed run in CI says why.
    problems = {
        "failures": report["failures"][:10],
        "failed_checks": {k: v for k, v in checks.items() if isinstance(v, list) and v},
        "tokens_over_budget": checks["tokens"]["over_budget"],
        # Every fault window saw traffic, and the faults were felt (some retryable errors).
        "quiet_windows": [
            w["name"] for w in report["windows"] if not phases[w["name"]]["requests"]
        ],
        "redis_down_unfelt": phases["redis-down"]["retryable"] == 0,
        "nothing_to_check": not (
            checks["counter_writes_acknowledged"] and checks["uninstalled_checked"]
        ),
        "verdict": report["verdict"],
        "exit_status": result.returncode,
    }
    expected = {
        "failures": [],
        "failed_checks": {},
        "tokens_over_budget": [],
        "quiet_windows": [],
        "redis_down_unfelt": False,
        "nothing_to_check": False,
        "verdict": "pass",
        "exit_status": 0,
    }
    assert problems == expected, (problems, result.stderr[-3000:])
