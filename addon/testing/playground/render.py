"""How the playground shows what the add-on sends: HipChat's curated HTML, linked text, cards.

HipChat rendered notification HTML from an allow-list of tags and attributes (docs/protocol.md,
"Send room notification body"); cards allow fewer tags. Everything else is shown as text.
"""

from __future__ import annotations

import html
import html.parser
import re
from collections.abc import Collection
from typing import Any

from markupsafe import Markup

__all__ = ["CARD_TAGS", "MESSAGE_TAGS", "clean_html", "text_html"]

MESSAGE_TAGS = frozenset(
    "a b i strong em br img pre code ul ol li table thead tbody tr td th span p".split()
)
CARD_TAGS = frozenset({"a", "b", "i", "strong", "span"})
_ATTRIBUTES = {
    "a": {"href"},
    "img": {"src", "alt", "width", "height"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan"},
}
_URL = re.compile(r"https?://[^\s<>\"']+")
_MENTION = re.compile(r"(?<![\w@])@\w+")


class _Cleaner(html.parser.HTMLParser):
    def __init__(self, tags: Collection[str]) -> None:
        super().__init__(convert_charrefs=True)
        self.tags = tags
        self.out: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in self.tags:
            return
        kept = "".join(
            f' {name}="{html.escape(value)}"'
            for name, value in attrs
            if value is not None
            and name in _ATTRIBUTES.get(tag, ())
            and (name not in ("href", "src") or _URL.fullmatch(value))
        )
        extra = ' target="_blank" rel="noopener"' if tag == "a" else ""
        self.out.append(f"<{tag}{kept}{extra}>")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.tags and tag not in ("br", "img"):
            self.out.append(f"</{tag}>")

    def handle_data(self, data: str) -> None:
        self.out.append(html.escape(data))


def clean_html(value: object, tags: Collection[str] = MESSAGE_TAGS) -> Markup:
    """``value`` as HTML keeping only ``tags`` (and safe attributes); other markup is dropped."""
    cleaner = _Cleaner(tags)
    cleaner.feed(str(value))
    cleaner.close()
    return Markup("".join(cleaner.out))  # every piece was escaped or allow-listed


def text_html(value: object) -> Markup:
    """A ``text`` notification as HipChat showed it: escaped, links clickable, @mentions bold."""
    out: list[str] = []
    last = 0
    text = str(value)
    for found in _URL.finditer(text):
        out.append(_mentions(text[last : found.start()]))
        url = html.escape(found.group())
        out.append(f'<a href="{url}" target="_blank" rel="noopener">{url}</a>')
        last = found.end()
    out.append(_mentions(text[last:]))
    return Markup("".join(out))  # escaped above


def _mentions(text: str) -> str:
    return _MENTION.sub(lambda m: f"<b>{m.group()}</b>", html.escape(text))


def card_description(card: dict[str, Any]) -> Markup:
    """A card's description: a plain string, or ``{"format": "html"|"text", "value"}``."""
    description = card.get("description")
    if isinstance(description, dict):
        value = description.get("value", "")
        if description.get("format") == "html":
            return clean_html(value, CARD_TAGS)
        return text_html(value)
    return text_html(description or "")
