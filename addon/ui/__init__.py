"""UI extensions: glances, web panels, dialogs, actions, external pages and a configuration page.

Declared on ``Integration`` beside commands (``addon.ui.extensions``), answered with the values
of ``addon.ui.values``, verified and served by ``addon.ui.routes``. What authors import is
re-exported by ``addon``: ``Glance``, ``Icon``, ``Lozenge``, ``Page``, ``UIRequest``.
"""

from __future__ import annotations

from addon.ui.values import Glance, Icon, Lozenge, Page

__all__ = ["Glance", "Icon", "Lozenge", "Page"]
