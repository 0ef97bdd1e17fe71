"""Alembic environment of the annotation database: run by `Database.migrate` on the connection it passes in."""

from alembic import context

from directalign.annotate.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run the annotation migrations through directalign.annotate.db.Database.migrate")
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
