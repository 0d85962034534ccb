"""Processes: programs the floor forbids."""
