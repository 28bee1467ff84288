"""(being written)"""

from __future__ import annotations

import argparse


def add_parser(verbs: argparse._SubParsersAction) -> None:
    """Register this module's CLI verb (wired from cli.py)."""
