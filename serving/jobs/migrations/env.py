"""Alembic environment: migrations run on the connection `serving.jobs.database.migrate` hands over.

Run by hand with `alembic -x url=sqlite:///jobs.sqlite3 ...` is not supported: use `imgserve`'s own
`migrate(url)` so the locking (one migrator at a time) stays in one place.
"""

from alembic import context

from serving.jobs.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run the job-store migrations through serving.jobs.database.migrate(url)")
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
)
with context.begin_transaction():
    context.run_migrations()
