#!/usr/bin/env python
"""fgbench entry point: `python bench.py ...` or `accelerate launch bench.py ...`."""
from bench.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
