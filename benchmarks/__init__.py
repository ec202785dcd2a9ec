"""Reproducible benchmarks for dftui, measured side by side with their peers.

`python -m benchmarks` starts one fresh PostgreSQL cluster (the embedded PostgreSQL 18 by
default), runs the dftui engine as real subprocesses against it, runs DBOS Transact and pgbench
against the same server in the same run, prints a table of every figure with its ratio to the
peer and to PostgreSQL's commit limit, and records the table in benchmarks/RESULTS.md.

Speed is measured here and only here: the test suite never asserts timings.
"""
