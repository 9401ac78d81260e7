"""Persistence: ORM rows, repositories and migrations (SQLite and PostgreSQL)."""
