"""Alembic environment for the label store, configured in code by ``bot.store.alembic_config``.

The database URL comes from ``config.attributes["url"]`` (no alembic.ini). Online mode only:
ptbot always migrates a live database (``bot.store.migrate``).
"""

from __future__ import annotations

from alembic import context

from bot.store import Base, make_engine

config = context.config
url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
if not url:
    raise ValueError("no database URL: call bot.store.migrate(url) (or set sqlalchemy.url)")

engine = make_engine(url)
try:
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata,
                          render_as_batch=connection.dialect.name == "sqlite")
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
finally:
    engine.dispose()
