"""The kit's version (recorded with every run's provenance)."""

__version__ = "0.1.0"
