"""The agent's controls: one package per OS surface, each a pure ``rules``
module (policy to decisions, no I/O) and a ``control`` module (events,
threads). ``base`` is what every control is."""
