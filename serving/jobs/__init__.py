"""Batch jobs: `/v1/batch` takes many images (files, archives, URIs) as one job that a `BatchWorker` deployment
runs through the same Ray Serve graph as online requests, with bounded concurrency.

Layout: `settings` (IMGSERVE_* env), `tables` + `migrations` + `database` (SQLAlchemy/Alembic job store),
`store` (API side) and `work_queue` (worker side), `objects` (content-addressed input store), `intake`,
`archives`, `uris` (inputs), `runner` + `worker` (processing), `webhooks`, `results` and `schemas` (output).
See docs/BATCH.md.
"""
