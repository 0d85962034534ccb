"""The agent API: ingest, enrollment, heartbeats, commands, central policy."""
