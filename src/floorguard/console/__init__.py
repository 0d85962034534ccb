"""The console: one ASGI app over one store (SQLite by default, PostgreSQL at scale)."""
