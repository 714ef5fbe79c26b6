"""The Celery app, built from ``Settings`` by the composition root (no module-level app).

Delivery guarantees: tasks are acknowledged after they finish (``acks_late``)
and put back when their worker process dies (``task_reject_on_worker_lost``), so a crash means
"run again", never "lost". ``bot.pr_review`` makes running again harmless, and a per-task
delivery counter in Redis fails a task that keeps killing its worker after ``max_deliveries``.
Each worker process takes one task at a time (prefetch 1: a review can take a minute), and
Redis hands an unacknowledged task to another worker only after ``visibility_timeout``, which
is kept above the hard time limit so a slow task is never run twice at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from celery import Celery
from celery.signals import worker_process_init
from kombu import Queue

from bot.config import Settings

if TYPE_CHECKING:
    from workers.tasks import WorkerRuntime

log = logging.getLogger(__name__)

# Task names: the web process sends by name, so it never imports the tasks (nor PyGithub).
REVIEW_TASK = "ptbot.review"
SCORE_TASK = "ptbot.score"
PUBLISH_TASK = "ptbot.publish"
FEEDBACK_TASK = "ptbot.feedback"
HARVEST_TASK = "ptbot.harvest_feedback"
MINE_RANGE_TASK = "ptbot.mine_range"
"""``ptbot mine-repo --queue``: one range of commits (cpu queue)."""
EXTRACT_SHARD_TASK = "ptbot.extract_shard"
"""``ptbot extract --queue``: one shard of line states (gpu queue)."""
ADAPT_TASK = "ptbot.adapt"
"""One repository's scheduled ``ptbot adapt`` (gpu queue)."""
ADAPT_SCHEDULE_TASK = "ptbot.adapt_schedule"
"""Beat: one ``ADAPT_TASK`` per mirrored repository (cpu queue)."""
ADAPT_EVERY_SECONDS = 7 * 24 * 3600.0
"""How often beat re-adapts every mirrored repository (weekly)."""
HARVEST_EVERY_SECONDS = 300.0
"""How often beat looks for PRs due a poll (each PR has its own decaying schedule)."""


@dataclass(frozen=True)
class WorkerConfig:
    """How the Celery workers run; the defaults suit one GPU box and a review under 5 minutes."""

    soft_time_limit: int = 300
    """Seconds after which a task gets ``SoftTimeLimitExceeded`` (it fails, the check run stays)."""
    time_limit: int = 360
    """Seconds after which the worker process running a task is killed (then redelivered)."""
    max_deliveries: int = 3
    """A task delivered more often than this (crashes, hard time limits) fails for good."""
    cpu_queue: str = "cpu"
    """Queue of the GitHub I/O tasks (reading the PR, posting the review)."""
    gpu_queue: str = "gpu"
    """Queue of the scoring task; only workers with the model (and a GPU, ideally) consume it."""
    key_prefix: str = ""
    """Prefix of every broker key in Redis (kombu ``global_keyprefix``), to share one Redis."""
    preload_scorer: bool = False
    """Load the model in each worker process right after fork instead of on the first task."""

    def __post_init__(self) -> None:
        if not 0 < self.soft_time_limit < self.time_limit:
            raise ValueError(f"need 0 < soft_time_limit < time_limit, got {self.soft_time_limit} "
                             f"and {self.time_limit} seconds")
        if self.max_deliveries < 1:
            raise ValueError(f"max_deliveries must be at least 1, got {self.max_deliveries}")
        if not self.cpu_queue or not self.gpu_queue:
            raise ValueError("cpu_queue and gpu_queue must be non-empty queue names")

    @property
    def visibility_timeout(self) -> int:
        """Seconds before Redis redelivers an unacknowledged task: above the hard limit."""
        return self.time_limit + 60

    @property
    def lock_seconds(self) -> int:
        """How long a job key stays locked by a publishing worker: also above the hard limit."""
        return self.time_limit + 60


def make_producer(settings: Settings, config: WorkerConfig | None = None) -> Celery:
    """A Celery app that only sends tasks (the web process): same broker settings, no tasks."""
    config = config or WorkerConfig()
    app = Celery("ptbot", broker=settings.redis_url, set_as_current=False)
    transport: dict[str, Any] = {"visibility_timeout": config.visibility_timeout}
    if config.key_prefix:
        transport["global_keyprefix"] = config.key_prefix
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,  # a failed task is done; the cap handles crashes
        worker_prefetch_multiplier=1,
        task_soft_time_limit=config.soft_time_limit,
        task_time_limit=config.time_limit,
        broker_transport_options=transport,
        task_queues=(Queue(config.cpu_queue), Queue(config.gpu_queue)),
        task_default_queue=config.cpu_queue,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,  # stages hand results on with send_task; no result backend
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=True,
    )
    return app


def make_celery(settings: Settings, config: WorkerConfig | None = None,
                runtime: WorkerRuntime | None = None) -> Celery:
    """A Celery app on ``settings.redis_url`` with the ptbot tasks registered (workers).

    ``runtime`` (default: from ``settings``) gives the tasks their GitHub client, scorer and
    ledger; tests pass one with a fake scorer.
    """
    from workers.tasks import WorkerRuntime, register_tasks

    config = config or WorkerConfig()
    runtime = runtime or WorkerRuntime(settings)
    app = make_producer(settings, config)
    register_tasks(app, runtime, cpu_queue=config.cpu_queue, gpu_queue=config.gpu_queue,
                   max_deliveries=config.max_deliveries, lock_seconds=config.lock_seconds)
    from workers.tasks import register_scaleout_tasks

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
    from workers.tasks import register_feedback_tasks

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


def celery_enqueue(app: Celery, cpu_queue: str = "cpu") -> Callable[[dict[str, Any]], str]:
    """The ``enqueue`` for ``bot.webhook.create_app``: one ``send_task`` to the cpu queue."""

    def enqueue(job: dict[str, Any]) -> str:
        return app.send_task(REVIEW_TASK, args=[job], queue=cpu_queue).id

    return enqueue


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
    from workers.tasks import register_adaptation_tasks

    if every <= 0:
        raise ValueError(f"the adaptation interval must be > 0 seconds, got {every}")
    register_adaptation_tasks(app, app.ptbot_runtime,  # type: ignore[attr-defined]
                              gpu_queue=app.ptbot_config.gpu_queue,  # type: ignore[attr-defined]
                              max_deliveries=app.ptbot_config.max_deliveries)  # type: ignore[attr-defined]
    cpu = app.ptbot_config.cpu_queue  # type: ignore[attr-defined]
    app.conf.beat_schedule = {**(app.conf.beat_schedule or {}),
                              "ptbot-adapt": {"task": ADAPT_SCHEDULE_TASK, "schedule": every,
                                              "options": {"queue": cpu}}}
