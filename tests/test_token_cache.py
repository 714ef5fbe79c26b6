"""Installation tokens kept in real Redis (bot.token_cache) and shared by GitHubApp instances that
stand in for worker processes (each with its own Redis connection), against the fake GitHub."""

from __future__ import annotations

import json
import logging
import time
import uuid

import pytest
import redis
from conftest import TEST_APP_ID, TEST_INSTALLATION_ID, put_pull_request
from github import GithubException

from bot.config import Settings
from bot.github import GitHubApp, RetryPolicy, WriteGate
from bot.token_cache import (
    REFRESH_MARGIN_SECONDS,
    CachedToken,
    MemoryTokenCache,
    RedisTokenCache,
    token_key,
)
from bot.write_gate import RedisWriteGate
from workers.tasks import WorkerRuntime, eager_runtime

HEAD = "a" * 40
MINT = r"^/app/installations/\d+/access_tokens$"


@pytest.fixture
def prefix(redis_url):
    prefix = f"ptbot-test:{uuid.uuid4().hex}:token:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(prefix + "*"):
        client.delete(key)


@pytest.fixture
def pr(fake_github):
    return put_pull_request(fake_github, 7, HEAD, [("c" * 40, "Add", {"src/a.py": "x = 1\n"})])


def worker(fake_github, app_private_key, redis_url, prefix) -> GitHubApp:
    """One worker process's App client: its own Redis connection, the shared key prefix."""
    cache = RedisTokenCache(redis.Redis.from_url(redis_url), prefix=prefix)
    return GitHubApp(str(TEST_APP_ID), app_private_key, fake_github.base_url, seconds_between_writes=0,
                     retry=RetryPolicy(max_attempts=2, jitter=0.0), token_cache=cache)


def key_for(fake_github) -> str:
    return token_key(fake_github.base_url, str(TEST_APP_ID), TEST_INSTALLATION_ID)


def test_memory_cache_hands_out_only_usable_tokens():
    now = [1000.0]
    cache = MemoryTokenCache(clock=lambda: now[0])
    cache.put("k", CachedToken("ghs_one", 1000.0 + 3600))
    assert cache.get("k").token == "ghs_one"
    now[0] += 3600 - REFRESH_MARGIN_SECONDS  # exactly five minutes left: no longer handed out
    assert cache.get("k") is None
    cache.put("k", CachedToken("ghs_two", now[0] + 3600))
    cache.drop("k", "ghs_one")  # an older token's 401 must not drop the newer one
    assert cache.get("k").token == "ghs_two"
    cache.drop("k", "ghs_two")
    assert cache.get("k") is None
    assert "ghs_two" not in repr(CachedToken("ghs_two", 1.0))


def test_redis_cache_expires_entries_five_minutes_before_the_token(redis_url, prefix):
    client = redis.Redis.from_url(redis_url)
    cache = RedisTokenCache(client, prefix=prefix)
    expires = time.time() + 3600
    cache.put("k", CachedToken("ghs_one", expires))
    assert json.loads(client.get(prefix + "k")) == {"token": "ghs_one", "expires_at": expires}
    assert 3600 - REFRESH_MARGIN_SECONDS - 5 <= client.ttl(prefix + "k") <= 3600 - REFRESH_MARGIN_SECONDS
    assert cache.get("k") == CachedToken("ghs_one", expires)

    cache.put("short", CachedToken("ghs_short", time.time() + REFRESH_MARGIN_SECONDS - 10))
    assert client.get(prefix + "short") is None  # not worth sharing

    cache.drop("k", "ghs_other")
    assert cache.get("k") is not None
    cache.drop("k", "ghs_one")
    assert client.get(prefix + "k") is None

    client.set(prefix + "bad", b"not json")
    assert cache.get("bad") is None


def test_workers_share_one_installation_token(fake_github, app_private_key, redis_url, prefix, pr):
    first = worker(fake_github, app_private_key, redis_url, prefix)
    second = worker(fake_github, app_private_key, redis_url, prefix)
    assert first.pull_request(TEST_INSTALLATION_ID, "octo", "shop", 7).head_sha == HEAD
    assert second.pull_request(TEST_INSTALLATION_ID, "octo", "shop", 7).head_sha == HEAD
    (mint,) = fake_github.requests_to("POST", MINT)
    assert mint.headers["Authorization"].startswith("Bearer ")  # minted with the App's JWT
    gets = fake_github.requests_to("GET", r"^/repos/octo/shop/pulls/7$")
    (token,) = fake_github.tokens
    assert [g.headers["Authorization"] for g in gets] == [f"token {token}"] * 2
    cached = RedisTokenCache(redis.Redis.from_url(redis_url), prefix=prefix).get(key_for(fake_github))
    assert cached.token == token and cached.expires_at > time.time() + 3000


def test_a_token_with_five_minutes_left_is_replaced(fake_github, app_private_key, redis_url, prefix, pr):
    client = redis.Redis.from_url(redis_url)
    # Written by a worker an hour ago; its Redis TTL has not run out yet, its token nearly has.
    client.set(prefix + key_for(fake_github), json.dumps({"token": "ghs_old", "expires_at": time.time() + 240}))
    app = worker(fake_github, app_private_key, redis_url, prefix)
    assert app.pull_request(TEST_INSTALLATION_ID, "octo", "shop", 7).head_sha == HEAD
    assert len(fake_github.requests_to("POST", MINT)) == 1
    (token,) = fake_github.tokens
    assert json.loads(client.get(prefix + key_for(fake_github)))["token"] == token


def test_a_401_drops_the_cached_token_and_mints_once(fake_github, app_private_key, redis_url, prefix, pr):
    client = redis.Redis.from_url(redis_url)
    client.set(prefix + key_for(fake_github),
               json.dumps({"token": "ghs_revoked", "expires_at": time.time() + 3600}), ex=3000)
    app = worker(fake_github, app_private_key, redis_url, prefix)
    assert app.pull_request(TEST_INSTALLATION_ID, "octo", "shop", 7).head_sha == HEAD
    gets = fake_github.requests_to("GET", r"^/repos/octo/shop$")  # the first request of the job
    assert [g.status for g in gets] == [401, 200]
    assert gets[0].headers["Authorization"] == "token ghs_revoked"
    assert len(fake_github.requests_to("POST", MINT)) == 1
    (token,) = fake_github.tokens
    assert gets[1].headers["Authorization"] == f"token {token}"
    assert json.loads(client.get(prefix + key_for(fake_github)))["token"] == token


def test_a_second_401_is_final(fake_github, app_private_key, redis_url, prefix, pr):
    app = worker(fake_github, app_private_key, redis_url, prefix)
    fake_github.fail_next("GET", r"^/repos/octo/shop/pulls/7$", 401, body={"message": "Bad credentials"}, times=3)
    with pytest.raises(GithubException) as e:
        app.pull_request(TEST_INSTALLATION_ID, "octo", "shop", 7).pull()
    assert e.value.status == 401
    assert len(fake_github.requests_to("GET", r"^/repos/octo/shop/pulls/7$")) == 2
    assert len(fake_github.requests_to("POST", MINT)) == 2  # the first token, then one re-mint


def test_tokens_are_never_logged(fake_github, app_private_key, redis_url, prefix, pr, caplog):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="github")  # PyGithub's own logger stops at INFO by default
    client = redis.Redis.from_url(redis_url)
    client.set(prefix + key_for(fake_github),
               json.dumps({"token": "ghs_revoked", "expires_at": time.time() + 3600}), ex=3000)
    app = worker(fake_github, app_private_key, redis_url, prefix)
    api = app.pull_request(TEST_INSTALLATION_ID, "octo", "shop", 7)
    api.files()
    api.create_check_run(title="t", summary="s")
    mint_logs = [r.getMessage() for r in caplog.records
                 if r.name == "github.Requester" and "access_tokens" in r.getMessage()]
    assert mint_logs and '"token": "(removed)"' in mint_logs[0]  # PyGithub logs the answer's body
    for token in [*fake_github.tokens, "ghs_revoked"]:
        assert token not in caplog.text


def test_workers_get_redis_backed_tokens_and_gates_the_eager_runtime_does_not(fake_github, app_private_key,
                                                                                redis_url):
    settings = Settings(app_id=str(TEST_APP_ID), private_key=app_private_key,
                        github_api_url=fake_github.base_url, redis_url=redis_url)
    app = WorkerRuntime(settings).github()
    app.client(TEST_INSTALLATION_ID)
    assert isinstance(app.token_cache, RedisTokenCache)
    assert isinstance(app._gates[TEST_INSTALLATION_ID], RedisWriteGate)
    assert app._gates[TEST_INSTALLATION_ID].min_interval == settings.seconds_between_writes

    eager = eager_runtime(Settings(app_id=str(TEST_APP_ID), private_key=app_private_key,
                                   github_api_url=fake_github.base_url,
                                   redis_url="redis://127.0.0.1:1/0")).github()  # nothing listens there
    eager.client(TEST_INSTALLATION_ID)
    assert isinstance(eager.token_cache, MemoryTokenCache)
    assert isinstance(eager._gates[TEST_INSTALLATION_ID], WriteGate)
