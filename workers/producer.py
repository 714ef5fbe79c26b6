"""What the web process needs to send work to the Celery workers: the task names, the broker
settings (``WorkerConfig``) and a producer app that registers no task.

The web process sends by task name, so it never imports ``workers.tasks`` (nor PyGithub or the
scorer); the worker app (``workers.celery_app``) builds on the same producer settings and
registers the tasks under these names.

Delivery guarantees: tasks are acknowledged after they finish (``acks_late``)
and put back when their worker process dies (``task_reject_on_worker_lost``), so a crash means
"run again", never "lost". ``bot.pr_review`` makes running again harmless, and a per-task
delivery counter in Redis fails a task that keeps killing its worker after ``max_deliveries``.
Each worker process takes one task at a time (prefetch 1: a review can take a minute), and
Redis hands an unacknowledged task to another worker only after ``visibility_timeout``, which
is kept above the hard time limit so a slow task is never run twice at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery import Celery
from kombu import Queue

from bot.config import Settings

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


def celery_enqueue(app: Celery, cpu_queue: str = "cpu") -> Callable[[dict[str, Any]], str]:
    """The ``enqueue`` for ``bot.webhook.create_app``: one ``send_task`` to the cpu queue."""

    def enqueue(job: dict[str, Any]) -> str:
        return app.send_task(REVIEW_TASK, args=[job], queue=cpu_queue).id

    return enqueue
