"""The auditor's daily compliance summary: rollups at ingest, the report, its formats, the
console page, scheduled archiving and digest checks. The console's wiring (``app.py``)
puts the rollups into the ingest pipeline and the schedule into the app's life."""
