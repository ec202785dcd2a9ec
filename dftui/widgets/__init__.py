"""Reusable widgets and presentation helpers of the dftui TUI (no database access here)."""
