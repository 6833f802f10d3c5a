"""Runners: one run, sweeps and backends, the CLI."""
