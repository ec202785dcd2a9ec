"""dftui engine: the executor that runs df.* durable workflows (no UI imports here)."""

__version__ = "0.4.0"
