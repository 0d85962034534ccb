"""Ingest: storing agents' records once, checking chains, and the
projections kept in the same transaction."""
