"""Alembic environment: the engine comes from the caller (lifecycle.store.db.migrate)."""

from alembic import context

from lifecycle.store.models import Base

engine = context.config.attributes["engine"]
with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=True,
        # Revisions import `from lifecycle.store import models` and name its column types so.
        user_module_prefix="models.",
    )
    context.run_migrations()
