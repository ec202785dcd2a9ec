"""`python -m engine --dsn DSN`: run the executor without the CLI (used by fault tests)."""

from __future__ import annotations

import argparse
import sys

import psycopg

from engine.config import EngineConfig
from engine.runner import main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m engine")
    parser.add_argument("--dsn", default="")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--no-install", action="store_true")
    parser.add_argument("--metrics-addr", metavar="HOST:PORT",
                        help="serve Prometheus metrics (env DFTUI_ENGINE_METRICS_ADDR)")
    args = parser.parse_args()
    try:
        config = EngineConfig.from_env(dsn=args.dsn, concurrency=args.concurrency,
                                       install=not args.no_install, metrics_addr=args.metrics_addr)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        sys.exit(main(config))
    except (RuntimeError, psycopg.OperationalError) as exc:  # the metrics port is taken, the
        # schema is missing, the database cannot be reached: one line, no traceback
        print(f"python -m engine: {' '.join(str(exc).split())}", file=sys.stderr)
        sys.exit(1)
