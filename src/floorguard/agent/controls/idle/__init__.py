"""Idle lock: warn, lock and prove it locked."""
