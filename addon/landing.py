"""The landing page at ``GET /``: what the add-on does, and how to install it.

It lists the loaded integrations' commands with their usage and help, the UI extensions the
descriptor declares (glances, web panels, dialogs, actions, external pages, configuration page),
and the install form. Server-rendered, no JavaScript, one small inline stylesheet; every value is
escaped. ``render_landing`` is a pure function of what the add-on loaded at start-up.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from addon.descriptor import Capabilities
from addon.integrations import Integration

__all__ = ["LANDING_HEADERS", "LandingPage", "render_landing"]

LANDING_HEADERS = {
    # No script may run on this page, and no other site may frame it.
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src http: https: data:; "
        "base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
}
_EXTENSIONS = (
    ("glance", "Glances", "in the room's sidebar"),
    ("webPanel", "Web panels", "beside the chat"),
    ("dialog", "Dialogs", "opened from the room"),
    ("action", "Actions", "in message and input menus"),
    ("externalPage", "Pages", "opened from HipChat"),
)
_PAGES = (("configurable", "Configuration page"), ("adminPage", "Admin page"))


@dataclasses.dataclass(frozen=True)
class LandingPage:
    """What the landing page shows."""

    capabilities: Capabilities
    descriptor: Mapping[str, Any]
    descriptor_url: str
    integrations: Sequence[Integration]
    hipchat_server: str = ""
    """The install form's default HipChat server (empty: the visitor types it)."""


def render_landing(page: LandingPage) -> str:
    """The page's HTML."""
    caps = page.capabilities
    return _PAGE.format(
        css=_CSS,
        name=escape(caps.name),
        description=escape(caps.description),
        descriptor=escape(page.descriptor_url),
        commands=_commands(page.integrations),
        listeners=_listeners(page.integrations),
        extensions=_extensions(page.descriptor.get("capabilities", {})),
        host=escape(page.hipchat_server),
        vendor=_vendor(caps.vendor),
    )


def _commands(integrations: Sequence[Integration]) -> str:
    commands = sorted(
        ((c, i) for i in integrations for c in i.commands.values()), key=lambda pair: pair[0].name
    )
    if not commands:
        return '<p class="empty">No commands are loaded.</p>'
    items = "".join(
        f'<li class="command"><code class="usage">{escape(c.usage)}</code>'
        f'<span class="help">{escape(c.help) or "&nbsp;"}</span>'
        f'<span class="owner">{escape(i.name)}</span></li>'
        for c, i in commands
    )
    return f'<ul class="commands">{items}</ul>'


def _listeners(integrations: Sequence[Integration]) -> str:
    lines = [
        f"<li><strong>{escape(i.name)}</strong> reacts to messages matching "
        f"<code>{escape(pattern.pattern)}</code></li>"
        for i in integrations
        for pattern, _handler in i.patterns
    ]
    events = {(i.name, event) for i in integrations for event, _handler in i.events}
    lines += [
        f"<li><strong>{escape(name)}</strong> listens for <code>{escape(event)}</code></li>"
        for name, event in sorted(events)
    ]
    return f'<ul class="listeners">{"".join(lines)}</ul>' if lines else ""


def _extensions(capabilities: Mapping[str, Any]) -> str:
    groups = [
        _extension_group(title, where, entries)
        for kind, title, where in _EXTENSIONS
        if isinstance(entries := capabilities.get(kind), list) and entries
    ]
    groups += [
        _extension_group(title, "for admins, in HipChat's integration settings", [{}])
        for kind, title in _PAGES
        if isinstance(capabilities.get(kind), Mapping)
    ]
    if not groups:
        return ""
    return (
        '<section id="extensions"><h2>In HipChat</h2>'
        "<p>Besides its commands, the add-on shows up in HipChat itself.</p>"
        f'<div class="extensions">{"".join(groups)}</div></section>'
    )


def _extension_group(title: str, where: str, entries: Sequence[object]) -> str:
    names = [_entry_name(entry) for entry in entries]
    items = "".join(f"<li>{escape(name)}</li>" for name in names if name)
    return (
        f'<div class="extension"><h3>{escape(title)}</h3><p class="where">{escape(where)}</p>'
        f"{f'<ul>{items}</ul>' if items else ''}</div>"
    )


def _entry_name(entry: object) -> str:
    """``name.value`` (or ``title.value``, or the key) of a descriptor UI entry."""
    if not isinstance(entry, Mapping):
        return ""
    for field in ("name", "title"):
        value = entry.get(field)
        if isinstance(value, Mapping) and isinstance(value.get("value"), str):
            return str(value["value"])
        if isinstance(value, str):
            return value
    key = entry.get("key")
    return key if isinstance(key, str) else ""


def _vendor(vendor: Mapping[str, str] | None) -> str:
    if not vendor or not vendor.get("name"):
        return ""
    name = escape(str(vendor["name"]))
    url = str(vendor.get("url", ""))
    if url.startswith(("https://", "http://")):
        return f' by <a href="{escape(url)}">{name}</a>'
    return f" by {name}"


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{name}</title><style>{css}</style></head>
<body>
<header class="hero"><div class="wrap">
<p class="eyebrow">HipChat add-on</p>
<h1>{name}</h1>
<p class="lead">{description}</p>
<p class="cta"><a class="button" href="#install">Install it</a>
<a class="link" href="#commands">See the commands</a></p>
</div></header>
<main class="wrap">
<section id="commands"><h2>Commands</h2>
<p>Type them in any room the add-on is installed in.</p>
{commands}{listeners}
</section>
{extensions}
<section id="install"><h2>Install it</h2>
<form action="/install" method="get" class="install">
<label><span>HipChat server</span><input name="hipchat" value="{host}"
placeholder="hipchat.example.com" required></label>
<label><span>Room <small>(optional)</small></span><input name="room"
placeholder="pick one in HipChat"></label>
<button type="submit">Install in HipChat</button>
</form>
<p>Or paste the descriptor URL into HipChat, under <em>Integrations &rarr; Install an
integration from a descriptor URL</em>:</p>
<p><code class="url">{descriptor}</code></p>
</section>
</main>
<footer class="wrap">{name}{vendor} &middot; <a href="{descriptor}">descriptor</a></footer>
</body></html>
"""

_CSS = """
:root{--ink:#172b4d;--muted:#5e6c84;--line:#dfe1e6;--blue:#205081;--accent:#3572b0;
--paper:#f4f5f7}
*{box-sizing:border-box}
body{margin:0;font:16px/1.55 -apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
color:var(--ink);background:#fff}
.wrap{max-width:56rem;margin:0 auto;padding:0 1.5rem}
.hero{background:linear-gradient(135deg,var(--blue),var(--accent));color:#fff;padding:3.5rem 0 3rem}
.eyebrow{text-transform:uppercase;letter-spacing:.12em;font-size:.8rem;opacity:.8;margin:0}
h1{font-size:2.6rem;line-height:1.15;margin:.3rem 0 .6rem}
.lead{font-size:1.2rem;max-width:40rem;margin:0 0 1.6rem;opacity:.95}
.button,button{display:inline-block;background:#fff;color:var(--blue);border:0;
border-radius:4px;padding:.65rem 1.2rem;font-family:inherit;font-size:1rem;font-weight:600;
line-height:1.4;text-decoration:none;cursor:pointer}
button{background:var(--blue);color:#fff}
.button:focus,button:focus,input:focus{outline:3px solid #ffab00;outline-offset:2px}
.link{color:#fff;margin-left:1rem}
h2{font-size:1.5rem;margin:2.5rem 0 .3rem}
h3{font-size:1rem;margin:0}
section>p{color:var(--muted);margin-top:0}
.commands{list-style:none;padding:0;margin:1rem 0;border:1px solid var(--line);border-radius:6px}
.command{display:grid;grid-template-columns:minmax(10rem,16rem) 1fr auto;gap:1rem;
padding:.75rem 1rem;border-top:1px solid var(--line);align-items:baseline}
.command:first-child{border-top:0}
.usage{font-weight:600;color:var(--blue)}
.owner{font-size:.8rem;color:var(--muted);background:var(--paper);border-radius:3px;
padding:.1rem .45rem}
code{font-family:"SFMono-Regular",Menlo,Consolas,monospace;font-size:.92em}
.listeners{color:var(--muted);padding-left:1.2rem}
.extensions{display:grid;grid-template-columns:repeat(auto-fill,minmax(15rem,1fr));gap:1rem;
margin-top:1rem}
.extension{border:1px solid var(--line);border-radius:6px;padding:1rem}
.extension .where{color:var(--muted);font-size:.9rem;margin:.1rem 0 .5rem}
.extension ul{margin:0;padding-left:1.2rem}
.install{display:flex;flex-wrap:wrap;gap:1rem;align-items:flex-end;background:var(--paper);
border-radius:6px;padding:1.2rem;margin:1rem 0}
.install label{display:flex;flex-direction:column;font-weight:600;font-size:.9rem;gap:.3rem}
.install small{font-weight:400;color:var(--muted)}
input{font:inherit;font-weight:400;padding:.55rem .7rem;border:1px solid #c1c7d0;border-radius:4px;
min-width:16rem;background:#fff}
.url{display:inline-block;background:var(--paper);padding:.4rem .7rem;border-radius:4px;
word-break:break-all}
.empty{font-style:italic}
footer{color:var(--muted);font-size:.9rem;padding-top:2rem;padding-bottom:2.5rem;
border-top:1px solid var(--line);margin-top:3rem}
footer a{color:var(--muted)}
@media (max-width:40rem){.command{grid-template-columns:1fr}h1{font-size:2rem}}
"""
