"""Sealing secrets at rest: ``oauthSecret`` and tokens, when ``ADDON_SECRET_KEY`` is set.

Uses Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``) with a key derived from the setting.
Without a key, ``Sealer`` stores values as they are, marked so that a key added later still
reads them.
"""

from __future__ import annotations

import base64
import hashlib
from typing import TYPE_CHECKING

from addon.errors import ConfigError, SecretKeyMismatch
from addon.settings import Secret

if TYPE_CHECKING:
    from cryptography.fernet import Fernet

__all__ = ["Sealer"]

_PLAIN = "plain:"
_SEALED = "fernet:"


class Sealer:
    """Seals and opens strings with the key from ``ADDON_SECRET_KEY`` (or passes them through)."""

    def __init__(self, secret_key: Secret | None) -> None:
        self._fernet: Fernet | None = None
        if secret_key is not None:
            # Imported only when a key is set: cryptography costs start-up time otherwise.
            from cryptography.fernet import Fernet

            digest = hashlib.sha256(secret_key.value.encode()).digest()
            self._fernet = Fernet(base64.urlsafe_b64encode(digest))

    @property
    def is_enabled(self) -> bool:
        """True when values are encrypted."""
        return self._fernet is not None

    def seal(self, value: str) -> str:
        """Encrypt ``value`` (or mark it plain when no key is set)."""
        if self._fernet is None:
            return _PLAIN + value
        return _SEALED + self._fernet.encrypt(value.encode()).decode()

    def open(self, stored: str) -> str:
        """Decrypt what ``seal`` wrote."""
        if stored.startswith(_PLAIN):
            return stored[len(_PLAIN) :]
        if not stored.startswith(_SEALED):
            raise ConfigError("A stored secret has an unknown format; was the store written by us?")
        if self._fernet is None:
            raise SecretKeyMismatch(
                "The store holds encrypted secrets but ADDON_SECRET_KEY is not set; set it"
            )
        from cryptography.fernet import InvalidToken  # loaded with the key, in __init__

        try:
            return self._fernet.decrypt(stored[len(_SEALED) :].encode()).decode()
        except InvalidToken as exc:
            raise SecretKeyMismatch(
                "A stored secret does not decrypt with ADDON_SECRET_KEY; is it the key used before?"
            ) from exc
