"""The values UI handlers return: ``Glance`` (with ``Lozenge`` or ``Icon`` status) and ``Page``.

A glance handler returns a ``Glance``; the add-on answers HipChat's client with its JSON (see
docs/protocol.md, Glance data). Page handlers (web panels, dialogs, external and configuration
pages) return a ``Page``: a Jinja2 template of the integration's ``templates/`` folder and its
context, rendered with autoescaping inside the add-on's page frame (see docs/protocol.md,
Pages in HipChat).
"""

from __future__ import annotations

import dataclasses
import html
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["LOZENGE_TYPES", "Glance", "Icon", "Lozenge", "Page", "icon_of"]

LOZENGE_TYPES = frozenset({"default", "success", "error", "current", "new", "complete", "moved"})


@dataclasses.dataclass(frozen=True)
class Icon:
    """An icon in two resolutions; relative paths are files of the integration's ``static/``."""

    url: str
    url_2x: str

    def to_json(self, resolve: Callable[[str], str]) -> dict[str, str]:
        """``{"url", "url@2x"}`` with relative paths made absolute by ``resolve``."""
        return {"url": resolve(self.url), "url@2x": resolve(self.url_2x)}


def icon_of(value: object, where: str) -> Icon:
    """An ``Icon`` from an ``Icon``, a ``{"url", "url@2x"}`` mapping or a path.

    A path ``icons/pr.png`` stands for ``icons/pr.png`` and ``icons/pr@2x.png``.
    """
    if isinstance(value, Icon):
        return _checked(value, where)
    if isinstance(value, str):
        stem, dot, suffix = value.rpartition(".")
        return _checked(Icon(value, f"{stem}@2x.{suffix}" if dot else f"{value}@2x"), where)
    if isinstance(value, Mapping):
        return _checked(Icon(str(value.get("url") or ""), str(value.get("url@2x") or "")), where)
    raise TypeError(f"{where}: icon must be an Icon, a path or a mapping, not {type(value)}")


def _checked(icon: Icon, where: str) -> Icon:
    if not icon.url or not icon.url_2x:
        raise ValueError(f"{where}: an icon needs both 'url' and 'url@2x'; give both")
    return icon


@dataclasses.dataclass(frozen=True)
class Lozenge:
    """A glance status lozenge: a short label in one of HipChat's colours (``type``)."""

    label: str
    type: str = "default"

    def __post_init__(self) -> None:
        if self.type not in LOZENGE_TYPES:
            raise ValueError(
                f"Lozenge type {self.type!r} is not one of {', '.join(sorted(LOZENGE_TYPES))}"
            )


@dataclasses.dataclass(frozen=True)
class Glance:
    """What a glance shows: a label, an optional status and metadata for conditions.

    The JSON it becomes is in docs/protocol.md, Glance data.

    ```python
    return Glance(f"<b>{count}</b> notes", html=True, status=Lozenge("NEW", "new"))
    ```
    ``label`` is plain text (escaped) unless ``html=True``.
    """

    label: str
    html: bool = False
    status: Lozenge | Icon | None = None
    metadata: Mapping[str, Any] | None = None

    def to_json(self, resolve: Callable[[str], str] = str) -> dict[str, Any]:
        """The glance data JSON; ``resolve`` makes relative icon paths absolute."""
        value = self.label if self.html else html.escape(self.label)
        body: dict[str, Any] = {"label": {"type": "html", "value": value}}
        if isinstance(self.status, Lozenge):
            lozenge = {"label": self.status.label, "type": self.status.type}
            body["status"] = {"type": "lozenge", "value": lozenge}
        elif isinstance(self.status, Icon):
            body["status"] = {"type": "icon", "value": self.status.to_json(resolve)}
        if self.metadata is not None:
            body["metadata"] = dict(self.metadata)
        return body


@dataclasses.dataclass(frozen=True)
class Page:
    """A page to render: ``template`` from the integration's ``templates/`` and its ``context``.

    ``Page.settings()`` is the built-in configuration form for the integration's settings.
    """

    template: str
    context: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    title: str = ""

    @classmethod
    def settings(cls, title: str = "Settings") -> Page:
        """The built-in form that edits the integration's declared settings."""
        return cls("_addon/settings.html", title=title)
