"""Secrets at rest."""

from __future__ import annotations

import pytest

from addon.errors import ConfigError
from addon.seal import Sealer
from addon.settings import Secret


def test_without_a_key_values_are_marked_plain() -> None:
    sealer = Sealer(None)
    assert not sealer.is_enabled
    assert sealer.open(sealer.seal("s3cret")) == "s3cret"


def test_with_a_key_values_are_unreadable_and_round_trip() -> None:
    sealer = Sealer(Secret("k" * 32))
    sealed = sealer.seal("s3cret-oauth")
    assert "s3cret-oauth" not in sealed
    assert sealer.open(sealed) == "s3cret-oauth"
    assert sealer.seal("s3cret-oauth") != sealed  # a fresh IV each time


def test_plain_values_still_read_after_a_key_is_added() -> None:
    assert Sealer(Secret("k" * 32)).open(Sealer(None).seal("old")) == "old"


@pytest.mark.parametrize(
    ("sealer", "stored", "hint"),
    [
        (Sealer(None), Sealer(Secret("k" * 32)).seal("x"), "ADDON_SECRET_KEY is not set"),
        (Sealer(Secret("j" * 32)), Sealer(Secret("k" * 32)).seal("x"), "does not decrypt"),
        (Sealer(None), "garbage", "unknown format"),
    ],
    ids=["no-key", "wrong-key", "unknown"],
)
def test_unreadable_values_raise_config_errors(sealer: Sealer, stored: str, hint: str) -> None:
    with pytest.raises(ConfigError, match=hint):
        sealer.open(stored)
