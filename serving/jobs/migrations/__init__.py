"""Alembic migrations of the job store (run programmatically by `serving.jobs.database.migrate`)."""
