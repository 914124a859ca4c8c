"""Every store key the add-on uses is built here, namespaced by the add-on key.

Each key that belongs to one installation carries the installation's ``oauth_id`` once, as a
Redis Cluster hash tag: ``{prefix}:<kind>:{<oauth_id>}[:<rest>]``. Redis Cluster hashes only what
is between the braces, so every key of one installation lands in one hash slot, and the atomic
operations that touch several of them (a Lua script, MULTI) work on a cluster as on one server.
The layout is documented, with its history, in docs/store.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Iterable

__all__ = ["KINDS", "STORAGE_MAP_SUFFIX", "Keys", "hash_tag", "require_one_slot"]


STORAGE_MAP_SUFFIX = ":fields"
# The kinds of key that belong to one installation (or, for storage, to one owner).
KINDS = (
    "installation",
    "lock",
    "token",
    "user-token",
    "oauth-state",
    "client-gone",
    "seen",
    "jti",
    "storage",
    "config",
    "backoff",
)


@dataclasses.dataclass(frozen=True)
class Keys:
    """Builds the keys of one add-on (``prefix`` is the add-on key)."""

    prefix: str

    def __post_init__(self) -> None:
        if "{" in self.prefix or "}" in self.prefix:
            # A brace in the prefix would become the hash tag of every key, on one cluster node.
            raise ValueError(f"The store key prefix {self.prefix!r} must not contain '{{' or '}}'")

    def _of(self, kind: str, owner: str, rest: str = "") -> str:
        if "{" in owner or "}" in owner:  # it would end the hash tag early (callers validate ids)
            raise ValueError(f"A store key owner must not contain '{{' or '}}': {owner!r}")
        return f"{self.prefix}:{kind}:{{{owner}}}{rest}"

    def installation(self, oauth_id: str) -> str:
        return self._of("installation", oauth_id)

    def installation_lock(self, oauth_id: str) -> str:
        return self._of("lock", oauth_id, ":installation")

    def installations(self) -> str:
        """The set of every installed oauth_id (one key, never in a multi-key operation)."""
        return f"{self.prefix}:installations"

    def token(self, oauth_id: str, scopes: tuple[str, ...]) -> str:
        return self._of("token", oauth_id, f":{' '.join(sorted(scopes))}")

    def token_lock(self, oauth_id: str, scopes: tuple[str, ...]) -> str:
        return self._of("lock", oauth_id, f":token:{' '.join(sorted(scopes))}")

    def token_backoff(self, oauth_id: str, scopes: tuple[str, ...]) -> str:
        """Set for a while after the token endpoint failed, so that no replica asks it again."""
        return self._of("backoff", oauth_id, f":token:{' '.join(sorted(scopes))}")

    def user_token(self, oauth_id: str, user_id: str) -> str:
        return self._of("user-token", oauth_id, f":{user_id}")

    def user_token_lock(self, oauth_id: str, user_id: str) -> str:
        return self._of("lock", oauth_id, f":user-token:{user_id}")

    def oauth_state(self, state: str) -> str:
        # A state value is "<oauth_id>~<random>": uninstall finds it by prefix, and "~" never occurs
        # in an oauth_id, so installation "abc" does not match "abc.x"'s states.
        oauth_id, tilde, rest = state.partition("~")
        return self._of("oauth-state", oauth_id, tilde + rest)

    def client_gone(self, oauth_id: str) -> str:
        return self._of("client-gone", oauth_id)

    def seen_message(self, oauth_id: str, message_id: str) -> str:
        return self._of("seen", oauth_id, f":{_part(message_id)}")

    def jwt_id(self, oauth_id: str, jti: str) -> str:
        """A signed request's ``jti``, remembered until its ``exp`` so it is accepted once."""
        return self._of("jti", oauth_id, f":{_part(jti)}")

    def storage(self, owner: str, integration: str) -> str:
        """An integration's storage: a map, one field per name (``owner`` is an oauth_id)."""
        return self._of("storage", owner, f":{integration}{STORAGE_MAP_SUFFIX}")

    def legacy_storage(self, owner: str, integration: str) -> str:
        """The older format: the whole storage as one JSON document (``owner`` may be "global").

        Still read; the first write moves it into ``storage`` and deletes it.
        """
        return self._of("storage", owner, f":{integration}")

    def storage_lock(self, owner: str, integration: str) -> str:
        return self._of("lock", owner, f":storage:{integration}")

    def config(self, oauth_id: str, integration: str) -> str:
        """An integration's settings in one installation (its configuration page saves them)."""
        return self._of("config", oauth_id, f":{integration}")

    def config_lock(self, oauth_id: str, integration: str) -> str:
        """Held while a configuration page's save reads, merges and writes ``config``."""
        return self._of("lock", oauth_id, f":config:{integration}")

    def storage_prefix(self) -> str:
        return f"{self.prefix}:storage:"

    def storage_owner_and_integration(self, key: str) -> tuple[str, str]:
        """The owner and integration of a ``storage`` (or ``legacy_storage``) key."""
        tagged, _, integration = key.removeprefix(self.storage_prefix()).partition(":")
        return tagged.strip("{}"), integration.removesuffix(STORAGE_MAP_SUFFIX)

    def of_installation(self, oauth_id: str) -> tuple[list[str], list[str]]:
        """The exact keys and the key prefixes that hold everything of one installation.

        Every prefix ends after the closing brace of the tag, so installation ``abc`` never
        matches ``abcd``'s keys.
        """
        exact = [self.installation(oauth_id), self.client_gone(oauth_id)]
        prefixes = [self._of(kind, oauth_id) for kind in KINDS if kind not in _EXACT_KINDS]
        return exact, prefixes

    def tagged_name(self, key: str) -> str | None:
        """The hash-tagged name of a key written in the layout before hash tags, or None.

        The owner (an oauth_id, or "global" for storage) ends at the first ":" or "~"; neither
        occurs in an oauth_id.
        """
        kind, _, rest = key.removeprefix(f"{self.prefix}:").partition(":")
        if not key.startswith(f"{self.prefix}:") or kind not in KINDS or not rest:
            return None
        if rest.startswith("{"):
            return None  # tagged already
        owner = re.split(r"[:~]", rest, maxsplit=1)[0]
        return self._of(kind, owner, rest[len(owner) :]) if owner else None

    def legacy_prefixes(self) -> list[str]:
        """The key prefixes under which keys without hash tags may still be stored."""
        return [f"{self.prefix}:{kind}:" for kind in KINDS]


_EXACT_KINDS = ("installation", "client-gone")
_SAFE_PART = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def _part(identifier: str) -> str:
    """``identifier`` as a key part: kept when plain, hashed when it holds anything else."""
    if _SAFE_PART.fullmatch(identifier):
        return identifier
    return hashlib.sha256(identifier.encode()).hexdigest()


def hash_tag(key: str) -> str:
    """What Redis Cluster hashes of ``key``: the text inside its first ``{…}``, else the key."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


def require_one_slot(keys: Iterable[str]) -> None:
    """Raise ``ValueError`` unless every key of one atomic operation has the same hash tag.

    Both backends check it, so that code tried on SQLite or one Redis also works on a cluster.
    """
    tags = {hash_tag(key) for key in keys}
    if len(tags) > 1:
        raise ValueError(
            f"An atomic store operation spans keys of different hash tags {sorted(tags)!r}; "
            "build its keys with the same {tag} (see addon/store/keys.py)"
        )
