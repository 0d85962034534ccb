"""Alembic environment: run by ``floorguard.console.store.db.migrate`` with a live connection."""

from alembic import context

from floorguard.console.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
