"""`python -m engine --dsn DSN`: run the executor without the CLI (used by fault tests)."""

from __future__ import annotations

import argparse
import sys

from engine.config import EngineConfig
from engine.runner import main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m engine")
    parser.add_argument("--dsn", default="")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--no-install", action="store_true")
    args = parser.parse_args()
    sys.exit(main(EngineConfig.from_env(dsn=args.dsn, concurrency=args.concurrency,
                                        install=not args.no_install)))
