"""``surerank rankers``: what is registered and what each needs installed."""

from __future__ import annotations

import argparse

from surerank.cli._common import echo
from surerank.registry import all_specs


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("rankers", help="list registered rankers and what each needs installed",
                                   description="List every registered ranker, whether it can run here, "
                                               "and the extra to install when it cannot.")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    specs = sorted(all_specs().values(), key=lambda s: s.name)
    width = max(len(s.name) for s in specs)
    for spec in specs:
        missing = spec.missing()
        if missing:
            hint = f"pip install 'surerank[{spec.extra}]'" if spec.extra else f"pip install {' '.join(missing)}"
            status = f"needs {', '.join(missing)} ({hint})"
        else:
            status = "ready"
        echo(f"{spec.name:<{width}}  {spec.summary}\n{'':<{width}}  {status}")
    return 0
