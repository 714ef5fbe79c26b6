"""Webhook ingress under load: signed deliveries from a second process, acks timed, jobs counted.

The server is what ``ptbot serve`` runs (``bot.webhook.create_app`` on werkzeug's threaded
server) with the real Redis de-duplication and the real Celery producer, so every accepted
delivery is a message in Redis. No worker runs: the benchmark measures the ack path only.
Every Redis key lives under a fresh prefix, deleted at the end.

    /work/venv/bin/python benchmarks/bench_webhook.py --rate 60 --seconds 5
    PTBOT_REDIS_URL=redis://host:6379/0 ... --json

Reports ack latency p50/p99/max (client side, over loopback HTTP), the rate achieved, the
status codes, and the number of messages found on the ``cpu`` queue afterwards.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PAYLOAD = ROOT.parent / "shared" / "fixtures" / "github" / "webhooks" / "pull_request" / "opened.payload.json"
SECRET = "bench-secret"


def drive(url: str, body: bytes, rate: float, seconds: float, duplicates: float, threads: int,
          out: mp.Queue) -> None:
    """Second process: send ``rate`` signed deliveries a second for ``seconds`` on a schedule."""
    from bot.webhook import signature_for

    signature = signature_for(SECRET.encode(), body)
    n = int(rate * seconds)
    every_kth = int(1 / duplicates) if duplicates > 0 else 0
    guids = [str(uuid.uuid4()) for _ in range(n)]

    def send(i: int, start_at: float) -> tuple[float, int]:
        delay = start_at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        # Every k-th delivery repeats an earlier GUID: a redelivery the server must not enqueue.
        guid = guids[i - 1] if every_kth and i and i % every_kth == 0 else guids[i]
        req = urllib.request.Request(url, data=body, method="POST", headers={
            "X-GitHub-Event": "pull_request", "X-GitHub-Delivery": guid,
            "X-Hub-Signature-256": signature, "Content-Type": "application/json"})
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                status = resp.status
        except urllib.error.HTTPError as e:
            status = e.code
        return time.perf_counter() - t0, status

    begin = time.perf_counter() + 0.2
    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(lambda i: send(i, begin + i / rate), range(n)))
    out.put({"results": results, "elapsed": time.perf_counter() - begin})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=60.0, help="deliveries per second (default 60)")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long to send (default 5)")
    parser.add_argument("--duplicates", type=float, default=0.1,
                        help="fraction of deliveries that repeat a GUID (default 0.1)")
    parser.add_argument("--threads", type=int, default=16, help="sender threads (default 16)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    if args.rate <= 0 or args.seconds <= 0 or not 0 <= args.duplicates < 1:
        parser.error("--rate and --seconds must be positive, --duplicates in [0, 1)")

    import logging

    import redis
    from werkzeug.serving import make_server

    from bot.config import Settings
    from bot.webhook import RedisDeliveryDeduper, create_app
    from workers.producer import WorkerConfig, celery_enqueue, make_producer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    redis_url = os.environ.get("PTBOT_REDIS_URL", "redis://127.0.0.1:6379/0")
    prefix = f"ptbot-bench-{uuid.uuid4().hex[:8]}:"
    settings = Settings(webhook_secret=SECRET, redis_url=redis_url)
    client = redis.Redis.from_url(redis_url)
    producer = make_producer(settings, WorkerConfig(key_prefix=prefix))
    app = create_app(settings, celery_enqueue(producer),
                     RedisDeliveryDeduper(client, ttl_seconds=600, prefix=prefix + "delivery:"))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    data = json.loads(PAYLOAD.read_text())
    data["installation"] = {"id": 1}
    body = json.dumps(data).encode()
    out: mp.Queue = mp.get_context("spawn").Queue()
    sender = mp.get_context("spawn").Process(target=drive, args=(
        f"http://127.0.0.1:{server.server_port}/webhook", body, args.rate, args.seconds,
        args.duplicates, args.threads, out))
    try:
        sender.start()
        report = out.get(timeout=args.seconds + 120)
        sender.join(timeout=30)
        enqueued = client.llen(prefix + "cpu")
    finally:
        server.shutdown()
        for key in client.scan_iter(prefix + "*"):
            client.delete(key)

    # Steady state: the first second includes opening connections to Redis from each thread.
    warm = sorted(lat for lat, _ in report["results"][int(args.rate):]) or [0.0, 0.0]
    qw = statistics.quantiles(warm, n=100, method="inclusive") if len(warm) > 1 else [0.0] * 99
    latencies = sorted(lat for lat, _ in report["results"])
    statuses: dict[int, int] = {}
    for _, status in report["results"]:
        statuses[status] = statuses.get(status, 0) + 1
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    figures = {"deliveries": len(latencies), "seconds": round(report["elapsed"], 2),
               "achieved_rate": round(len(latencies) / report["elapsed"], 1),
               "p50_ms": round(q[49] * 1000, 1), "p99_ms": round(q[98] * 1000, 1),
               "max_ms": round(latencies[-1] * 1000, 1),
               "after_first_second_p50_ms": round(qw[49] * 1000, 1),
               "after_first_second_p99_ms": round(qw[98] * 1000, 1), "statuses": statuses, "enqueued": enqueued,
               "cpus": os.cpu_count()}
    if args.json:
        print(json.dumps(figures))
        return
    print(f"{figures['deliveries']} signed deliveries in {figures['seconds']} s "
          f"({figures['achieved_rate']}/s, target {args.rate:g}/s) from a second process")
    print(f"ack latency: p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms, max {figures['max_ms']} ms")
    print(f"after the first second: p50 {figures['after_first_second_p50_ms']} ms, "
          f"p99 {figures['after_first_second_p99_ms']} ms")
    print(f"answers: {', '.join(f'{k}: {v}' for k, v in sorted(statuses.items()))}; "
          f"enqueued on the cpu queue: {enqueued}")
    if enqueued != statuses.get(202, 0):
        print("WARNING: enqueued messages differ from 202 answers", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
