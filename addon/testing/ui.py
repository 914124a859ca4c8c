"""The HipChat client's side of UI extensions, for ``FakeHipChat``: load glances and pages.

HipChat's client GETs a glance's ``queryUrl`` and a page's ``url`` with ``?signed_request=<jwt>``
(docs/protocol.md, JWT transport and Pages in HipChat). A loaded page can then call its add-on
with the JWT the add-on minted for it (``LoadedPage.call``), as its own JavaScript would. Glance
pushes the add-on made are read back from the fake REST API (``glance_pushes``).

```python
installed = await hipchat.install(addon, room_id=1)
assert (await hipchat.glance(installed, "notes"))["label"]["value"] == "0 notes"
page = await hipchat.page(installed, "configurable")
await page.call("POST", "/config", json={"greeting": "hi"})
```
"""

from __future__ import annotations

import dataclasses
import html.parser
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import httpx

from addon.jwt_auth import sign_jwt

if TYPE_CHECKING:
    from addon.testing.api import FakeRestAPI
    from addon.testing.fake import Installed

__all__ = ["GlancePush", "LoadedPage", "UIClientSide"]

_PAGE_KINDS = ("webPanel", "dialog", "externalPage")


class _Meta(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.meta: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "meta" and found.get("name"):
            self.meta[str(found["name"])] = found.get("content") or ""


@dataclasses.dataclass(frozen=True)
class LoadedPage:
    """A page as HipChat's client loaded it; ``call`` sends the page's own JWT back."""

    response: httpx.Response
    addon: httpx.AsyncClient = dataclasses.field(repr=False)

    @property
    def html(self) -> str:
        """The page's HTML."""
        return self.response.text

    @property
    def meta(self) -> dict[str, str]:
        """The page's ``<meta name=... content=...>`` values."""
        parser = _Meta()
        parser.feed(self.response.text)
        return parser.meta

    @property
    def token(self) -> str:
        """The JWT the add-on minted for this page (``<meta name="addon-token">``)."""
        return self.meta["addon-token"]

    async def call(
        self, method: str, path: str, *, json: Any = None, token: str | None = None
    ) -> httpx.Response:
        """Call ``/ui/{integration}{path}`` as the page's JavaScript does (``addon.fetch``)."""
        headers = {"Authorization": f"JWT {token or self.token}"}
        url = self.meta["addon-api"] + path
        return await self.addon.request(method, url, json=json, headers=headers)


@dataclasses.dataclass(frozen=True)
class GlancePush:
    """One glance update the add-on pushed: where to, the glances and the bearer token.

    See docs/protocol.md, Glance updates.
    """

    room: str | None
    user: str | None
    glances: list[dict[str, Any]]
    token: str


class UIClientSide:
    """The methods ``FakeHipChat`` gets for UI extensions (mixed into it)."""

    api: FakeRestAPI
    now: Callable[[], float]

    async def descriptor(self, addon: httpx.AsyncClient, url: str | None = None) -> dict[str, Any]:
        raise NotImplementedError  # FakeHipChat's

    def signed_request(
        self,
        installed: Installed,
        *,
        room: int | None = None,
        user: int | str = 1001,
        user_tz: str = "Europe/Paris",
        context: Mapping[str, object] | None = None,
        lifetime: float = 60,
    ) -> str:
        """A JWT as HipChat's client puts in ``signed_request`` (``context`` adds flags)."""
        full_context = {"room_id": installed.room if room is None else room, "user_tz": user_tz}
        full_context.update(context or {})
        return sign_jwt(
            installed.oauth_id,
            installed.oauth_secret,
            now=self.now(),
            sub=user,
            lifetime=lifetime,
            extra={"context": full_context},
        )

    async def ui_get(
        self,
        installed: Installed,
        url: str,
        *,
        token: str | None = None,
        origin: str | None = None,
        **signing: Any,
    ) -> httpx.Response:
        """GET a UI ``url`` with ``signed_request`` (``token`` replaces the JWT; "" omits it)."""
        token = self.signed_request(installed, **signing) if token is None else token
        query = (
            f"{'&' if '?' in url else '?'}{urlencode({'signed_request': token})}" if token else ""
        )
        headers = {"Origin": origin} if origin else {}
        return await installed.addon.get(url + query, headers=headers)

    async def ui_url(self, installed: Installed, key: str, kind: str | None = None) -> str:
        """The descriptor URL of extension ``key`` (``"configurable"``: the configuration page)."""
        capabilities = (await self.descriptor(installed.addon))["capabilities"]
        if key == "configurable":
            return str(capabilities["configurable"]["url"])
        for found in [kind] if kind else ["glance", *_PAGE_KINDS]:
            for entry in capabilities.get(found, []):
                if entry["key"] == key:
                    return str(entry.get("queryUrl") or entry["url"])
        raise KeyError(f"The descriptor declares no extension {key!r}")

    async def glance(self, installed: Installed, key: str, **signing: Any) -> dict[str, Any]:
        """Load glance ``key`` as the sidebar does; its JSON (``FakeHipChatError`` unless 200)."""
        response = await self.ui_get(
            installed, await self.ui_url(installed, key, "glance"), **signing
        )
        _require_ok(response, f"glance {key!r}")
        body: dict[str, Any] = response.json()
        return body

    async def page(self, installed: Installed, key: str, **signing: Any) -> LoadedPage:
        """Load a web panel, a dialog, an external page or (key ``"configurable"``) settings."""
        response = await self.ui_get(installed, await self.ui_url(installed, key), **signing)
        _require_ok(response, f"page {key!r}")
        return LoadedPage(response, installed.addon)

    def glance_pushes(self) -> list[GlancePush]:
        """The glance updates the add-on pushed through the REST API, oldest first."""
        pushes = []
        for request in self.api.requests:
            if request.operation.startswith("update_") and request.operation.endswith("glance"):
                body = request.json if isinstance(request.json, dict) else {}
                pushes.append(
                    GlancePush(
                        room=request.path_params.get("room_id_or_name"),
                        user=request.path_params.get("user_id_or_email"),
                        glances=list(body.get("glance", [])),
                        token=request.headers.get("authorization", "").partition(" ")[2],
                    )
                )
        return pushes


def _require_ok(response: httpx.Response, what: str) -> None:
    if response.status_code != 200:
        from addon.testing.fake import FakeHipChatError

        raise FakeHipChatError(f"{what} answered {response.status_code}", response)
