"""Numbered ClickHouse migrations: each module has SQL statements in `STATEMENTS`, each idempotent
(IF NOT EXISTS), applied in order by `manage.py migrate_clickhouse` and recorded in
`opentracy_migrations`."""
