"""Shared test rigs: the real services and processes the tests drive (a live console and
agent processes, PostgreSQL, cupsd, Xvfb, the logind bus, umockdev devices), as plain
modules that conftests and the benchmarks import."""
