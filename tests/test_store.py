"""The label store on SQLite and PostgreSQL: migrations, idempotent upserts, queries."""

from __future__ import annotations

import sqlalchemy as sa

from bot.store import EventIn, LabelStore, ScoredLineIn, migrate


def line(n: int, head: str = "a" * 40, posted: bool = False, fp: str | None = None) -> ScoredLineIn:
    return ScoredLineIn(installation_id=777, repo="octo/shop", number=7, head_sha=head, path="app.py",
                        line=n, text=f"x = {n}", context_hash="c" * 16, fingerprint=fp or f"{n:016x}",
                        model_version="m@1", score=0.5, probability=0.5, rank=n, posted=posted)


def test_migrate_creates_every_table_and_is_idempotent(store_url):
    migrate(store_url)
    migrate(store_url)  # at head already: nothing to do, no error
    engine = sa.create_engine(store_url)
    try:
        names = set(sa.inspect(engine).get_table_names())
        with engine.connect() as conn:
            version = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        engine.dispose()
    assert {"pull_requests", "snapshots", "scored_lines", "label_events", "etags", "alembic_version"} <= names
    assert version == "0001"


def test_recording_lines_twice_keeps_one_row_and_never_unposts(label_store: LabelStore):
    label_store.record_lines([line(1, posted=True), line(2)])
    label_store.record_lines([line(n, head="d" * 40) for n in range(1, 1201)])  # several chunks
    assert len(label_store.lines()) == 1202
    label_store.record_lines([line(1, posted=False), line(2, posted=True), line(3)])
    rows = {r.line: r for r in label_store.lines("octo/shop", 7) if r.head_sha == "a" * 40}
    assert sorted(rows) == [1, 2, 3]
    assert rows[1].posted and rows[2].posted and not rows[3].posted
    assert label_store.counts()["scored_lines"] == 1203


def test_link_comment_then_events_upsert_by_key(label_store: LabelStore):
    label_store.record_lines([line(1, fp="f" * 16)])
    line_id = label_store.link_comment("octo/shop", 7, "f" * 16, "a" * 40, None, 555)
    assert line_id is not None
    assert label_store.link_comment("octo/shop", 7, "0" * 16, None, None, 555) == line_id  # by comment id
    assert label_store.link_comment("octo/shop", 7, "e" * 16, None, None, 556) is None
    ev = EventIn(key="vote:555:alice", scored_line_id=line_id, repo="octo/shop", number=7,
                 kind="reaction", value="+1", user_login="alice")
    label_store.upsert_event(ev)
    label_store.upsert_event(EventIn(**{**vars(ev), "value": "-1"}))
    events = label_store.events("octo/shop", 7)
    assert [(e.key, e.value) for e in events] == [("vote:555:alice", "-1")]
    assert label_store.vote_keys(555) == {"vote:555:alice"}
    assert label_store.delete_events(["vote:555:alice", "vote:555:nobody"]) == 1
    assert label_store.events() == []


def test_pull_requests_snapshots_and_etags(label_store: LabelStore):
    label_store.watch_pull_request(777, "octo/shop", 7, "a" * 40, "dev", posted_at=100.0, next_poll_at=100.0)
    label_store.watch_pull_request(777, "octo/shop", 7, "b" * 40, None)  # a later head keeps the schedule
    label_store.watch_pull_request(777, "octo/shop", 8, "c" * 40, None)  # nothing posted: never polled
    pr = label_store.pull_request("octo/shop", 7)
    assert (pr.head_sha, pr.author, pr.first_posted_at, pr.next_poll_at) == ("b" * 40, "dev", 100.0, 100.0)
    assert [p.number for p in label_store.due_pull_requests(now=150.0)] == [7]
    assert label_store.pull_request("octo/shop", 8).next_poll_at is None
    assert label_store.due_pull_requests(now=50.0) == []
    label_store.set_pull_request("octo/shop", 7, state="done")
    assert label_store.due_pull_requests(now=1e12) == []

    label_store.save_snapshot("octo/shop", "a" * 40, "app.py", "one\n")
    label_store.save_snapshot("octo/shop", "a" * 40, "app.py", "ignored: first text wins\n")
    assert label_store.snapshot("octo/shop", "a" * 40, "app.py") == "one\n"
    assert label_store.snapshot("octo/shop", "b" * 40, "app.py") is None

    assert label_store.get_etag("k") is None
    label_store.put_etag("k", '"1"', "[]")
    label_store.put_etag("k", '"2"', "[1]")
    assert label_store.get_etag("k") == ('"2"', "[1]")


def test_unknown_event_kind_and_bad_urls_are_refused(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="kind"):
        EventIn(key="k", scored_line_id=1, repo="r", number=1, kind="mood", value="x")
    with pytest.raises(ValueError, match="sqlite:///PATH"):
        LabelStore("sqlite://")
    with pytest.raises(ValueError, match="unsupported"):
        LabelStore("mysql://x/y", create=False)
