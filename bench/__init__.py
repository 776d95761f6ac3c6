"""Benchmarks: `bench/run` stands up Postgres, Dovecot and the sync function and measures them.

One module per concern: `env` (containers and the function; mail comes from `harness.mailgen`),
`imports` (full import vs mbsync vs the raw fetch ceiling, no-op, memory), `import_child` (the
measured import, in its own process), `fanout` (scheduling, pg_cron fan-out, trigger latency),
`report` (statistics, the table, JSON and the chart).
"""
