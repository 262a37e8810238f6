"""The package version (its own module, so that code inside vitlens can read it without the facade)."""

__version__ = "0.1.0"
