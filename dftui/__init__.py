"""dftui: durable workflows inside PostgreSQL, with a terminal UI."""

from engine import __version__

__all__ = ["__version__"]
