"""The label store: every line ptbot scored and every piece of feedback on it (SQLAlchemy 2).

Four tables (the schema is created and evolved by Alembic, ``bot/migrations``, never by
``create_all``): ``pull_requests`` (what to poll and when), ``snapshots`` (file text at a SHA,
the ``code`` of an exported record), ``scored_lines`` (one row per line, head and model version)
and ``label_events`` (reactions, thread resolutions, replies, implicit edit labels).

Every write is an idempotent upsert on a natural key (``INSERT .. ON CONFLICT``), so concurrent
harvesters and webhook handlers, and redelivered tasks, can neither duplicate nor lose rows. The
same code runs on an SQLite file (default, one machine) and PostgreSQL (production). Times are
Unix seconds (floats): comparable the same way on both databases.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


class Base(DeclarativeBase):
    pass


class PullRequestRow(Base):
    """A PR ptbot scored: its state and the harvester's polling schedule."""

    __tablename__ = "pull_requests"
    __table_args__ = (UniqueConstraint("repo", "number", name="uq_pull_requests_repo_number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    installation_id: Mapped[int] = mapped_column(BigInteger)
    repo: Mapped[str] = mapped_column(String(200))
    number: Mapped[int] = mapped_column(Integer)
    author: Mapped[str | None] = mapped_column(String(100), nullable=True)
    state: Mapped[str] = mapped_column(String(10), default="open")
    """open, closed (final sweeps pending) or done (no more polling)."""
    merged: Mapped[bool] = mapped_column(Boolean, default=False)
    head_sha: Mapped[str] = mapped_column(String(64))
    first_posted_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    closed_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    next_poll_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_polled_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class SnapshotRow(Base):
    """The whole text of one file at one commit (what the scorer read)."""

    __tablename__ = "snapshots"
    __table_args__ = (UniqueConstraint("repo", "sha", "path", name="uq_snapshots_repo_sha_path"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repo: Mapped[str] = mapped_column(String(200))
    sha: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(String(1000))
    text: Mapped[str] = mapped_column(Text)


class ScoredLineRow(Base):
    """One scored line of one head, as one model version ranked it."""

    __tablename__ = "scored_lines"
    __table_args__ = (UniqueConstraint("repo", "number", "head_sha", "model_version", "path", "line",
                                       name="uq_scored_lines_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    installation_id: Mapped[int] = mapped_column(BigInteger)
    repo: Mapped[str] = mapped_column(String(200), index=True)
    number: Mapped[int] = mapped_column(Integer)
    head_sha: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(String(1000))
    line: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    context_hash: Mapped[str] = mapped_column(String(64))
    fingerprint: Mapped[str] = mapped_column(String(32), index=True)
    model_version: Mapped[str] = mapped_column(String(200))
    score: Mapped[float] = mapped_column(Float)
    probability: Mapped[float] = mapped_column(Float)
    rank: Mapped[int] = mapped_column(Integer)
    posted: Mapped[bool] = mapped_column(Boolean, default=False)
    comment_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True, index=True)
    provenance: Mapped[str] = mapped_column(Text, default="")
    ai_authored: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)


class LabelEventRow(Base):
    """One piece of feedback on a scored line; ``key`` makes every kind of event idempotent."""

    __tablename__ = "label_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(300), unique=True)
    """``vote:<comment>:<user>`` (one vote per user), ``thread:<comment>``, ``reply:<comment>``,
    ``edit:<scored line>``."""
    scored_line_id: Mapped[int] = mapped_column(ForeignKey("scored_lines.id", ondelete="CASCADE"), index=True)
    repo: Mapped[str] = mapped_column(String(200))
    number: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(20))
    """reaction, thread, reply or edit."""
    value: Mapped[str] = mapped_column(String(40))
    """reaction: +1 / -1; thread: resolved / unresolved; reply: replied; edit: changed /
    unchanged_at_merge."""
    user_login: Mapped[str | None] = mapped_column(String(100), nullable=True)
    user_type: Mapped[str | None] = mapped_column(String(20), nullable=True)
    permission: Mapped[str | None] = mapped_column(String(20), nullable=True)
    is_author: Mapped[bool] = mapped_column(Boolean, default=False)
    external_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    """GitHub's id of the reaction or reply comment, if any."""
    detail: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class EtagRow(Base):
    """The last ETag and body of a conditional GET, so a 304 is served from here across runs."""

    __tablename__ = "etags"

    key: Mapped[str] = mapped_column(String(500), primary_key=True)
    etag: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[float] = mapped_column(Float)


# ----- plain data in and out ------------------------------------------------------------------


@dataclass(frozen=True)
class ScoredLineIn:
    """A scored line to record (``bot.feedback.record_review`` builds these)."""

    installation_id: int
    repo: str
    number: int
    head_sha: str
    path: str
    line: int
    text: str
    context_hash: str
    fingerprint: str
    model_version: str
    score: float
    probability: float
    rank: int
    posted: bool = False
    provenance: str = ""
    ai_authored: bool | None = None


@dataclass(frozen=True)
class EventIn:
    """A label event to upsert; a later event with the same ``key`` replaces value and user."""

    key: str
    scored_line_id: int
    repo: str
    number: int
    kind: str
    value: str
    user_login: str | None = None
    user_type: str | None = None
    permission: str | None = None
    is_author: bool = False
    external_id: int | None = None
    detail: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("reaction", "thread", "reply", "edit"):
            raise ValueError(f"unknown label event kind {self.kind!r}")


# ----- engine, sessions, migrations -----------------------------------------------------------


def make_engine(url: str) -> Engine:
    """An engine for ``url`` (``sqlite:///FILE`` or ``postgresql+psycopg://...``).

    SQLite gets WAL, a busy timeout and ``BEGIN IMMEDIATE`` transactions: writers then queue
    for the file lock up front instead of failing when a read transaction tries to write.
    """
    if url.startswith("sqlite"):
        if url in ("sqlite://", "sqlite:///:memory:"):
            raise ValueError("the label store needs a database file (sqlite:///PATH); an in-memory "
                             "SQLite database is private to one connection")
        path = url.split(":///", 1)[-1]
        Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    if url.startswith("postgresql"):
        return create_engine(url, pool_pre_ping=True)
    raise ValueError(f"unsupported database URL {url!r}: use sqlite:///PATH or postgresql+psycopg://...")


def alembic_config(url: str) -> Any:
    """Alembic's Config for ``url``, built in code (no alembic.ini to ship)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["url"] = url
    return cfg


def migrate(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision`` (``alembic upgrade``)."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


class LabelStore:
    """Sessions and the upserts/queries ``bot.feedback`` needs; one per process."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        """``create``: run the migrations first (idempotent; cheap once at head)."""
        if create:
            migrate(url)
        self.url = url
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on error."""
        with self._sessions() as s, s.begin():
            yield s

    def _insert(self, table: Any) -> Any:
        return (postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert)(table)

    # -- writes ------------------------------------------------------------------------------

    def watch_pull_request(self, installation_id: int, repo: str, number: int, head_sha: str,
                           author: str | None, *, posted_at: float | None = None,
                           next_poll_at: float | None = None) -> None:
        """Remember a PR (insert, or move its head and keep its schedule).

        Only a PR with posted comments is polled: ``posted_at`` (when ptbot commented) starts
        the decaying schedule at ``next_poll_at``; without it the schedule is left as it was.
        """
        t = PullRequestRow.__table__
        stmt = self._insert(t).values(installation_id=installation_id, repo=repo, number=number,
                                      author=author, state="open", merged=False, head_sha=head_sha,
                                      first_posted_at=posted_at,
                                      next_poll_at=next_poll_at if posted_at is not None else None)
        update: dict[str, Any] = {"head_sha": stmt.excluded.head_sha, "state": "open",
                                  "installation_id": stmt.excluded.installation_id}
        if author:
            update["author"] = stmt.excluded.author
        if posted_at is not None:
            update["first_posted_at"] = func.coalesce(t.c.first_posted_at, stmt.excluded.first_posted_at)
            update["next_poll_at"] = stmt.excluded.next_poll_at
        with self.session() as s:
            s.execute(stmt.on_conflict_do_update(index_elements=["repo", "number"], set_=update))

    def set_pull_request(self, repo: str, number: int, **fields: Any) -> None:
        with self.session() as s:
            row = s.scalar(select(PullRequestRow).where(PullRequestRow.repo == repo,
                                                        PullRequestRow.number == number))
            if row is None:
                raise ValueError(f"{repo}#{number} is not in the label store")
            for k, v in fields.items():
                setattr(row, k, v)

    def save_snapshot(self, repo: str, sha: str, path: str, text: str) -> None:
        stmt = self._insert(SnapshotRow.__table__).values(repo=repo, sha=sha, path=path, text=text)
        with self.session() as s:
            s.execute(stmt.on_conflict_do_nothing(index_elements=["repo", "sha", "path"]))

    def record_lines(self, lines: Sequence[ScoredLineIn]) -> None:
        """Insert scored lines; a line already there only gains ``posted`` (never loses it)."""
        if not lines:
            return
        now = time.time()
        t = ScoredLineRow.__table__
        with self.session() as s:
            # Chunks keep each statement under SQLite's limit on bound parameters.
            for i in range(0, len(lines), 500):
                stmt = self._insert(t).values([dict(vars(ln), created_at=now) for ln in lines[i:i + 500]])
                s.execute(stmt.on_conflict_do_update(
                    index_elements=["repo", "number", "head_sha", "model_version", "path", "line"],
                    set_={"posted": t.c.posted | stmt.excluded.posted}))

    def link_comment(self, repo: str, number: int, fingerprint: str, head_sha: str | None,
                     model_version: str | None, comment_id: int) -> int | None:
        """Attach a posted comment to the scored line it is about; returns that line's id."""
        with self.session() as s:
            row = s.scalar(select(ScoredLineRow).where(ScoredLineRow.comment_id == comment_id))
            if row is not None:
                return row.id
            q = select(ScoredLineRow).where(ScoredLineRow.repo == repo, ScoredLineRow.number == number,
                                            ScoredLineRow.fingerprint == fingerprint)
            if head_sha:
                q = q.where(ScoredLineRow.head_sha == head_sha)
            if model_version:
                q = q.where(ScoredLineRow.model_version == model_version)
            row = s.scalar(q.order_by(ScoredLineRow.id).limit(1))
            if row is None:
                return None
            row.comment_id, row.posted = comment_id, True
            return row.id

    def upsert_event(self, ev: EventIn) -> None:
        """Insert an event, or replace value/user/detail of the one with the same key."""
        now = time.time()
        t = LabelEventRow.__table__
        stmt = self._insert(t).values(dict(vars(ev), created_at=now, updated_at=now))
        changed = {k: getattr(stmt.excluded, k) for k in
                   ("value", "user_login", "user_type", "permission", "is_author", "external_id", "detail")}
        with self.session() as s:
            s.execute(stmt.on_conflict_do_update(index_elements=["key"],
                                                 set_=dict(changed, updated_at=now)))

    def delete_events(self, keys: Sequence[str]) -> int:
        """Drop events by key (a retracted reaction); returns how many were there."""
        if not keys:
            return 0
        with self.session() as s:
            rows = s.scalars(select(LabelEventRow).where(LabelEventRow.key.in_(list(keys)))).all()
            for r in rows:
                s.delete(r)
            return len(rows)

    def get_etag(self, key: str) -> tuple[str, str] | None:
        with self.session() as s:
            row = s.get(EtagRow, key)
            return (row.etag, row.body) if row else None

    def put_etag(self, key: str, etag: str, body: str) -> None:
        stmt = self._insert(EtagRow.__table__).values(key=key, etag=etag, body=body, updated_at=time.time())
        fresh = {k: getattr(stmt.excluded, k) for k in ("etag", "body", "updated_at")}
        with self.session() as s:
            s.execute(stmt.on_conflict_do_update(index_elements=["key"], set_=fresh))

    # -- reads -------------------------------------------------------------------------------

    def pull_request(self, repo: str, number: int) -> PullRequestRow | None:
        with self.session() as s:
            return s.scalar(select(PullRequestRow).where(PullRequestRow.repo == repo,
                                                         PullRequestRow.number == number))

    def due_pull_requests(self, now: float) -> list[PullRequestRow]:
        with self.session() as s:
            return list(s.scalars(select(PullRequestRow).where(
                PullRequestRow.state != "done", PullRequestRow.next_poll_at <= now).order_by(
                PullRequestRow.next_poll_at)))

    def snapshot(self, repo: str, sha: str, path: str) -> str | None:
        with self.session() as s:
            return s.scalar(select(SnapshotRow.text).where(SnapshotRow.repo == repo, SnapshotRow.sha == sha,
                                                           SnapshotRow.path == path))

    def lines(self, repo: str | None = None, number: int | None = None) -> list[ScoredLineRow]:
        q = select(ScoredLineRow).order_by(ScoredLineRow.id)
        if repo is not None:
            q = q.where(ScoredLineRow.repo == repo)
        if number is not None:
            q = q.where(ScoredLineRow.number == number)
        with self.session() as s:
            return list(s.scalars(q))

    def events(self, repo: str | None = None, number: int | None = None,
               kind: str | None = None) -> list[LabelEventRow]:
        q = select(LabelEventRow).order_by(LabelEventRow.id)
        if repo is not None:
            q = q.where(LabelEventRow.repo == repo)
        if number is not None:
            q = q.where(LabelEventRow.number == number)
        if kind is not None:
            q = q.where(LabelEventRow.kind == kind)
        with self.session() as s:
            return list(s.scalars(q))

    def vote_keys(self, comment_id: int) -> set[str]:
        with self.session() as s:
            return set(s.scalars(select(LabelEventRow.key).where(
                LabelEventRow.key.like(f"vote:{comment_id}:%"))))

    def counts(self) -> dict[str, int]:
        """Rows per table (tests and ``feedback stats``)."""
        with self.session() as s:
            return {m.__tablename__: int(s.scalar(select(func.count()).select_from(m)) or 0)
                    for m in (PullRequestRow, SnapshotRow, ScoredLineRow, LabelEventRow)}
