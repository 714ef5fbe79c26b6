"""bot.write_gate.RedisWriteGate: one installation's writes spaced across processes, in real Redis.

Writer processes are real subprocesses sharing nothing but Redis. The assertions are about the
spacing between recorded write times (every process reads the same system clock), not about how
long anything took.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import redis
from conftest import TEST_APP_ID, TEST_INSTALLATION_ID, put_pull_request

from bot.github import GitHubApp, RetryPolicy
from bot.write_gate import RedisWriteGate

ROOT = Path(__file__).resolve().parents[1]
INTERVAL = 0.1

# A writer process: waits for "go" on stdin (after saying "ready"), then runs N writes through
# the gate; each write records its start and end and takes a little while, like a request.
WRITER = """
import json, sys, time
import redis
from bot.write_gate import RedisWriteGate
url, key, interval, n = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
gate = RedisWriteGate(redis.Redis.from_url(url), key, interval)
print("ready", flush=True)
sys.stdin.readline()
def write():
    start = time.time()
    time.sleep(0.01)
    return [start, time.time()]
print(json.dumps([gate.run(write, time.sleep) for _ in range(n)]), flush=True)
"""


@pytest.fixture
def gate_key(redis_url):
    key = f"ptbot-test:{uuid.uuid4().hex}:writes"
    yield key
    client = redis.Redis.from_url(redis_url)
    for k in client.scan_iter(key + "*"):
        client.delete(k)


def writer(redis_url: str, key: str, n: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, redis_url, key, str(INTERVAL), str(n)],
                            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def finish(proc: subprocess.Popen) -> list[list[float]]:
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    return json.loads(out)


def go(*procs: subprocess.Popen) -> None:
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()


def test_two_processes_write_one_at_a_time_min_interval_apart(redis_url, gate_key):
    n = 6
    a, b = writer(redis_url, gate_key, n), writer(redis_url, gate_key, n)
    go(a, b)
    writes = sorted([(s, e, "a") for s, e in finish(a)] + [(s, e, "b") for s, e in finish(b)])
    assert len(writes) == 2 * n
    for (_, prev_end, _), (start, _, _) in zip(writes, writes[1:]):
        # Serialised (no overlap) and spaced: each write starts INTERVAL after the previous ended.
        assert start - prev_end >= INTERVAL - 1e-3
    # First come, first served: a process writing in a loop does not keep the gate to itself.
    turns = sum(1 for x, y in zip(writes, writes[1:]) if x[2] != y[2])
    assert turns >= n


def test_a_deferral_in_one_process_holds_the_writes_of_another(redis_url, gate_key):
    child = writer(redis_url, gate_key, 1)
    before = time.time()
    RedisWriteGate(redis.Redis.from_url(redis_url), gate_key, INTERVAL).defer(1.0)
    go(child)
    ((start, _),) = finish(child)
    assert start - before >= 1.0


def test_a_rate_limit_seen_by_one_worker_holds_the_writes_of_another(fake_github, app_private_key, redis_url,
                                                                      gate_key):
    """Two App clients (two workers' worth: own Redis connection, own process-local state) on one
    installation: the 403 with retry-after that one of them gets holds the other's write too."""
    put_pull_request(fake_github, 7, "a" * 40, [("c" * 40, "Add", {"src/a.py": "x = 1\n"})])

    def worker_app() -> GitHubApp:
        client = redis.Redis.from_url(redis_url)
        return GitHubApp(str(TEST_APP_ID), app_private_key, fake_github.base_url, seconds_between_writes=0.0,
                         retry=RetryPolicy(max_attempts=3, jitter=0.0),
                         write_gate=lambda inst: RedisWriteGate(client, f"{gate_key}:{inst}", 0.0))

    first = worker_app().pull_request(TEST_INSTALLATION_ID, "octo", "shop", 7)
    second = worker_app().pull_request(TEST_INSTALLATION_ID, "octo", "shop", 7)
    first.head_sha, second.head_sha  # noqa: B018 - reads first, so only the writes are timed below
    fake_github.secondary_rate_limit_next("POST", r"/check-runs$", retry_after=1)
    limited = threading.Thread(target=lambda: first.create_check_run(title="first", summary="s"))
    limited.start()
    deadline = time.monotonic() + 30
    while not fake_github.requests_to("POST", r"/check-runs$") and time.monotonic() < deadline:
        time.sleep(0.01)
    second.create_check_run(title="second", summary="s")
    limited.join(timeout=30)
    posts = fake_github.requests_to("POST", r"/check-runs$")
    assert [p.status for p in posts] == [403, 201, 201]
    assert all(p.at - posts[0].at >= 1.0 for p in posts[1:])  # nobody wrote during the retry-after


def test_a_waiter_whose_process_died_does_not_block_the_queue(redis_url, gate_key):
    client = redis.Redis.from_url(redis_url)
    client.zadd(f"{gate_key}:queue", {"ghost": 0})  # first in line, then never asked again
    client.hset(f"{gate_key}:asked", "ghost", 0)
    naps: list[float] = []

    def sleep(seconds: float) -> None:
        naps.append(seconds)
        assert len(naps) < 50, "still waiting behind the dead waiter"
        time.sleep(seconds)

    assert RedisWriteGate(client, gate_key, INTERVAL).run(lambda: "written", sleep) == "written"
    assert client.zrange(f"{gate_key}:queue", 0, -1) == []
