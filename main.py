#!/usr/bin/env python3
"""MedAnomaly Workbench from a checkout: `python main.py` (or ./run.sh) opens the menu;
`python main.py --help` lists the commands. Installed (pip install .), the same is the
`medanomaly` command. The command line itself is menus/cli.py."""

from __future__ import annotations

import sys

from menus.cli import build_parser, main, run_command  # noqa: F401 - the names tests and scripts use

if __name__ == "__main__":
    sys.exit(main())
