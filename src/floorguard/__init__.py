"""floorguard: floor controls for call centres, with a tamper-evident record."""

__version__ = "0.1.0"
