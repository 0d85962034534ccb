"""The console's store: tables, engines and migrations."""
