"""``addon.__all__`` is sorted, complete and importable (the httpx test_exported_members idea)."""

from __future__ import annotations

import addon


def test_all_is_sorted_and_every_name_exists() -> None:
    assert addon.__all__ == sorted(addon.__all__)
    for name in addon.__all__:
        assert getattr(addon, name) is not None


def test_every_public_attribute_is_exported() -> None:
    public = {
        name
        for name, value in vars(addon).items()
        if not name.startswith("_") and getattr(value, "__module__", "").startswith("addon.")
    }
    assert public == set(addon.__all__)
