"""The worker's Celery app, built from ``Settings`` by the composition root (no module-level app).

It registers the tasks of ``workers.tasks`` under the names of ``workers.producer``; the tasks
never import this module back. Sending needs only ``workers.producer``.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import worker_process_init

from bot.config import Settings
from workers.producer import (
    ADAPT_EVERY_SECONDS,
    ADAPT_SCHEDULE_TASK,
    FEEDBACK_TASK,
    HARVEST_EVERY_SECONDS,
    HARVEST_TASK,
    WorkerConfig,
    make_producer,
)
from workers.tasks import (
    WorkerRuntime,
    register_adaptation_tasks,
    register_feedback_tasks,
    register_scaleout_tasks,
    register_tasks,
)

log = logging.getLogger(__name__)


def make_celery(settings: Settings, config: WorkerConfig | None = None,
                runtime: WorkerRuntime | None = None) -> Celery:
    """A Celery app on ``settings.redis_url`` with the ptbot tasks registered (workers).

    ``runtime`` (default: from ``settings``) gives the tasks their GitHub client, scorer and
    ledger; tests pass one with a fake scorer.
    """
    config = config or WorkerConfig()
    runtime = runtime or WorkerRuntime(settings)
    app = make_producer(settings, config)
    register_tasks(app, runtime, cpu_queue=config.cpu_queue, gpu_queue=config.gpu_queue,
                   max_deliveries=config.max_deliveries, lock_seconds=config.lock_seconds)
    register_scaleout_tasks(app, runtime, max_deliveries=config.max_deliveries)

    def after_fork(**_: Any) -> None:
        runtime.reset()
        if config.preload_scorer:
            log.info("loading the scorer in worker process")
            runtime.scorer()

    # Signals hold receivers weakly: the app keeps this one alive exactly as long as itself.
    worker_process_init.connect(after_fork)
    app.ptbot_after_fork = after_fork  # type: ignore[attr-defined]
    app.ptbot_runtime = runtime  # type: ignore[attr-defined]
    app.ptbot_config = config  # type: ignore[attr-defined]
    return app


def enable_feedback(app: Celery, database_url: str, feedback_settings: Any = None,
                    every: float = HARVEST_EVERY_SECONDS) -> None:
    """Turn on reviewer feedback on a worker app from ``make_celery``: publish records
    scored lines in the label store at ``database_url``, pushes / closes / review threads and
    replies become labels, and beat runs the reactions harvest every ``every`` seconds
    (``celery beat`` must run: ``ptbot worker --beat`` or a separate beat process)."""
    if every <= 0:
        raise ValueError(f"the harvest interval must be > 0 seconds, got {every}")
    runtime = app.ptbot_runtime  # type: ignore[attr-defined]
    runtime.feedback_url = database_url
    runtime.feedback_settings = feedback_settings
    register_feedback_tasks(app, runtime)
    queue = app.ptbot_config.cpu_queue  # type: ignore[attr-defined]
    app.conf.task_routes = {FEEDBACK_TASK: {"queue": queue}, HARVEST_TASK: {"queue": queue}}
    app.conf.beat_schedule = {"ptbot-harvest-feedback": {"task": HARVEST_TASK, "schedule": every,
                                                         "options": {"queue": queue}}}


def worker_argv(queues: str, concurrency: int, loglevel: str = "INFO") -> list[str]:
    """Arguments for ``app.worker_main`` (``ptbot worker``)."""
    names = [q.strip() for q in queues.split(",") if q.strip()]
    if not names:
        raise ValueError("--queues needs at least one queue name, e.g. cpu,gpu")
    if concurrency < 1:
        raise ValueError(f"--concurrency must be at least 1, got {concurrency}")
    return ["worker", f"--queues={','.join(names)}", f"--concurrency={concurrency}",
            f"--loglevel={loglevel}", "--without-gossip", "--without-mingle"]


# ----- scheduled per-repository adaptation: opt in with enable_adaptation ------------------------


def enable_adaptation(app: Celery, every: float = ADAPT_EVERY_SECONDS) -> None:
    """Re-run ``ptbot adapt`` every ``every`` seconds for each repository mirrored under
    ``Settings.adapt_mirrors`` (beat sends one task per repository to the gpu queue; its model
    home is ``Settings.model_homes/owner/name``). Adds to any beat schedule already set."""
    if every <= 0:
        raise ValueError(f"the adaptation interval must be > 0 seconds, got {every}")
    register_adaptation_tasks(app, app.ptbot_runtime,  # type: ignore[attr-defined]
                              gpu_queue=app.ptbot_config.gpu_queue,  # type: ignore[attr-defined]
                              max_deliveries=app.ptbot_config.max_deliveries)  # type: ignore[attr-defined]
    cpu = app.ptbot_config.cpu_queue  # type: ignore[attr-defined]
    app.conf.beat_schedule = {**(app.conf.beat_schedule or {}),
                              "ptbot-adapt": {"task": ADAPT_SCHEDULE_TASK, "schedule": every,
                                              "options": {"queue": cpu}}}
