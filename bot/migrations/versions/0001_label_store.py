"""The label store: pull requests, snapshots, scored lines, label events, ETags.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pull_requests",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("installation_id", sa.BigInteger, nullable=False),
        sa.Column("repo", sa.String(200), nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("author", sa.String(100)),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("merged", sa.Boolean, nullable=False),
        sa.Column("head_sha", sa.String(64), nullable=False),
        sa.Column("first_posted_at", sa.Float),
        sa.Column("closed_at", sa.Float),
        sa.Column("next_poll_at", sa.Float),
        sa.Column("last_polled_at", sa.Float),
        sa.UniqueConstraint("repo", "number", name="uq_pull_requests_repo_number"),
    )
    op.create_table(
        "snapshots",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("repo", sa.String(200), nullable=False),
        sa.Column("sha", sa.String(64), nullable=False),
        sa.Column("path", sa.String(1000), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.UniqueConstraint("repo", "sha", "path", name="uq_snapshots_repo_sha_path"),
    )
    op.create_table(
        "scored_lines",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("installation_id", sa.BigInteger, nullable=False),
        sa.Column("repo", sa.String(200), nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("head_sha", sa.String(64), nullable=False),
        sa.Column("path", sa.String(1000), nullable=False),
        sa.Column("line", sa.Integer, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("context_hash", sa.String(64), nullable=False),
        sa.Column("fingerprint", sa.String(32), nullable=False),
        sa.Column("model_version", sa.String(200), nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("probability", sa.Float, nullable=False),
        sa.Column("rank", sa.Integer, nullable=False),
        sa.Column("posted", sa.Boolean, nullable=False),
        sa.Column("comment_id", sa.BigInteger),
        sa.Column("provenance", sa.Text, nullable=False),
        sa.Column("ai_authored", sa.Boolean),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.UniqueConstraint("repo", "number", "head_sha", "model_version", "path", "line",
                            name="uq_scored_lines_key"),
    )
    op.create_index("ix_scored_lines_repo", "scored_lines", ["repo"])
    op.create_index("ix_scored_lines_fingerprint", "scored_lines", ["fingerprint"])
    op.create_index("ix_scored_lines_comment_id", "scored_lines", ["comment_id"])
    op.create_table(
        "label_events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("key", sa.String(300), nullable=False, unique=True),
        sa.Column("scored_line_id", sa.Integer, sa.ForeignKey("scored_lines.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("repo", sa.String(200), nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("value", sa.String(40), nullable=False),
        sa.Column("user_login", sa.String(100)),
        sa.Column("user_type", sa.String(20)),
        sa.Column("permission", sa.String(20)),
        sa.Column("is_author", sa.Boolean, nullable=False),
        sa.Column("external_id", sa.BigInteger),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index("ix_label_events_scored_line_id", "label_events", ["scored_line_id"])
    op.create_table(
        "etags",
        sa.Column("key", sa.String(500), primary_key=True),
        sa.Column("etag", sa.String(200), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    for table in ("etags", "label_events", "scored_lines", "snapshots", "pull_requests"):
        op.drop_table(table)
