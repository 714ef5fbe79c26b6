"""Installation tokens kept between requests and shared by every worker process.

An installation token lives an hour; minting one costs a signed JWT and a
POST. ``bot.github.GitHubApp`` asks its ``TokenCache`` first and mints only when no cached token
has more than ``REFRESH_MARGIN_SECONDS`` left, so N worker processes share one token per
installation instead of minting N. Tokens are secrets: nothing here logs them, and
``CachedToken``'s repr leaves the token out.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

REFRESH_MARGIN_SECONDS = 5 * 60
"""A token with less than this left is not handed out: a review started with it must finish
before it expires (the Celery hard time limit is 6 minutes)."""


@dataclass(frozen=True)
class CachedToken:
    """One installation token and when GitHub said it expires."""

    token: str = field(repr=False)
    expires_at: float
    """Unix time (seconds)."""

    def usable(self, now: float, margin: float = REFRESH_MARGIN_SECONDS) -> bool:
        """True while more than ``margin`` seconds are left."""
        return self.expires_at - now > margin


def token_key(api_url: str, app_id: str, installation_id: int) -> str:
    """Cache key of one installation's token: the same App id can exist on several hosts (GHES)."""
    return f"{api_url.rstrip('/')}|app={app_id}|installation={installation_id}"


class TokenCache(Protocol):
    """Where installation tokens are kept until ``REFRESH_MARGIN_SECONDS`` before they expire."""

    def get(self, key: str) -> CachedToken | None:
        """The token stored under ``key`` if it is still usable, else None."""
        ...

    def put(self, key: str, token: CachedToken) -> None:
        """Store ``token``; it is forgotten ``REFRESH_MARGIN_SECONDS`` before it expires."""
        ...

    def drop(self, key: str, token: str) -> None:
        """Forget ``key`` if it still holds ``token`` (GitHub refused it); a newer one stays."""
        ...


class MemoryTokenCache:
    """A ``TokenCache`` for one process (the default, ``ptbot serve --eager`` and the CLI)."""

    def __init__(self, clock: Any = time.time) -> None:
        self._tokens: dict[str, CachedToken] = {}
        self._clock = clock
        self._lock = threading.Lock()

    def get(self, key: str) -> CachedToken | None:
        with self._lock:
            tok = self._tokens.get(key)
            return tok if tok is not None and tok.usable(self._clock()) else None

    def put(self, key: str, token: CachedToken) -> None:
        with self._lock:
            self._tokens[key] = token

    def drop(self, key: str, token: str) -> None:
        with self._lock:
            if key in self._tokens and self._tokens[key].token == token:
                del self._tokens[key]


class RedisTokenCache:
    """A ``TokenCache`` in Redis, shared by every worker: ``<prefix><key>`` holds JSON
    ``{"token", "expires_at"}`` with a TTL that ends ``REFRESH_MARGIN_SECONDS`` before expiry."""

    # Compare-and-delete: a worker that saw a 401 must not drop a token another one just minted.
    _DROP = ("local v = redis.call('GET', KEYS[1]) "
             "if v and cjson.decode(v)['token'] == ARGV[1] then return redis.call('DEL', KEYS[1]) end "
             "return 0")

    def __init__(self, client: Any, prefix: str = "ptbot:token:", clock: Any = time.time) -> None:
        self.client, self.prefix, self._clock = client, prefix, clock

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisTokenCache:
        import redis

        return cls(redis.Redis.from_url(url, socket_timeout=5), **kwargs)

    def get(self, key: str) -> CachedToken | None:
        raw = self.client.get(self.prefix + key)
        if not raw:
            return None
        try:
            data = json.loads(raw)
            tok = CachedToken(str(data["token"]), float(data["expires_at"]))
        except (ValueError, KeyError, TypeError):
            return None  # not ours or damaged: mint a new one, which overwrites it
        return tok if tok.usable(self._clock()) else None

    def put(self, key: str, token: CachedToken) -> None:
        ttl = int(token.expires_at - self._clock() - REFRESH_MARGIN_SECONDS)
        if ttl < 1:
            return  # too close to expiry to be worth sharing
        value = json.dumps({"token": token.token, "expires_at": token.expires_at})
        self.client.set(self.prefix + key, value, ex=ttl)

    def drop(self, key: str, token: str) -> None:
        self.client.eval(self._DROP, 1, self.prefix + key, token)
