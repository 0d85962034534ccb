"""Print approval: every job held in CUPS until an SV decides."""
