"""Every store key the add-on uses is built here, namespaced by the add-on key."""

from __future__ import annotations

import dataclasses
import hashlib
import re

__all__ = ["STORAGE_MAP_SUFFIX", "Keys"]

STORAGE_MAP_SUFFIX = ":fields"


@dataclasses.dataclass(frozen=True)
class Keys:
    """Builds the keys of one add-on (``prefix`` is the add-on key)."""

    prefix: str

    def installation(self, oauth_id: str) -> str:
        return f"{self.prefix}:installation:{oauth_id}"

    def installation_lock(self, oauth_id: str) -> str:
        return f"{self.prefix}:lock:{oauth_id}:installation"

    def installations(self) -> str:
        return f"{self.prefix}:installations"

    def token(self, oauth_id: str, scopes: tuple[str, ...]) -> str:
        return f"{self.prefix}:token:{oauth_id}:{' '.join(sorted(scopes))}"

    def token_lock(self, oauth_id: str, scopes: tuple[str, ...]) -> str:
        return f"{self.prefix}:lock:{oauth_id}:token:{' '.join(sorted(scopes))}"

    def user_token(self, oauth_id: str, user_id: str) -> str:
        return f"{self.prefix}:user-token:{oauth_id}:{user_id}"

    def user_token_lock(self, oauth_id: str, user_id: str) -> str:
        return f"{self.prefix}:lock:{oauth_id}:user-token:{user_id}"

    def oauth_state(self, state: str) -> str:
        # A state value is "<oauth_id>~<random>": uninstall finds it by prefix, and "~" never occurs
        # in an oauth_id, so installation "abc" does not match "abc.x"'s states.
        return f"{self.prefix}:oauth-state:{state}"

    def client_gone(self, oauth_id: str) -> str:
        return f"{self.prefix}:client-gone:{oauth_id}"

    def seen_message(self, oauth_id: str, message_id: str) -> str:
        return f"{self.prefix}:seen:{oauth_id}:{_part(message_id)}"

    def jwt_id(self, oauth_id: str, jti: str) -> str:
        """A signed request's ``jti``, remembered until its ``exp`` so it is accepted once."""
        return f"{self.prefix}:jti:{oauth_id}:{_part(jti)}"

    def storage(self, owner: str, integration: str) -> str:
        """An integration's storage: a map, one field per name (``owner`` is an oauth_id)."""
        return f"{self.prefix}:storage:{owner}:{integration}{STORAGE_MAP_SUFFIX}"

    def legacy_storage(self, owner: str, integration: str) -> str:
        """The older format: the whole storage as one JSON document (``owner`` may be "global").

        Still read; the first write moves it into ``storage`` and deletes it.
        """
        return f"{self.prefix}:storage:{owner}:{integration}"

    def storage_lock(self, owner: str, integration: str) -> str:
        return f"{self.prefix}:lock:{owner}:storage:{integration}"

    def config(self, oauth_id: str, integration: str) -> str:
        """An integration's settings in one installation (its configuration page saves them)."""
        return f"{self.prefix}:config:{oauth_id}:{integration}"

    def storage_prefix(self) -> str:
        return f"{self.prefix}:storage:"

    def of_installation(self, oauth_id: str) -> tuple[list[str], list[str]]:
        """The exact keys and the key prefixes that hold everything of one installation.

        Every prefix ends in a separator, so installation ``abc`` never matches ``abcd``'s keys.
        """
        p = self.prefix
        exact = [f"{p}:installation:{oauth_id}", f"{p}:client-gone:{oauth_id}"]
        prefixes = [
            f"{p}:token:{oauth_id}:",
            f"{p}:lock:{oauth_id}:",
            f"{p}:user-token:{oauth_id}:",
            f"{p}:oauth-state:{oauth_id}~",
            f"{p}:seen:{oauth_id}:",
            f"{p}:jti:{oauth_id}:",
            f"{p}:storage:{oauth_id}:",
            f"{p}:config:{oauth_id}:",
        ]
        return exact, prefixes


_SAFE_PART = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def _part(identifier: str) -> str:
    """``identifier`` as a key part: kept when plain, hashed when it holds anything else."""
    if _SAFE_PART.fullmatch(identifier):
        return identifier
    return hashlib.sha256(identifier.encode()).hexdigest()
