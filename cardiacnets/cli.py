"""The ``cardiacnets`` command line.

Each subcommand lives in `cardiacnets.commands.<name>` with ``register(subparsers)``
(adds its parser and sets ``func``). `main(argv)` is callable from tests and
returns the exit status: 0 on success, 2 for a user or data error, which is
printed as one line naming the file and the problem (no traceback).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from cardiacnets import __version__
from cardiacnets.errors import CardiacNetsError

COMMANDS = ("inspect", "synth", "preprocess", "bench", "demo", "evaluate", "train", "review", "study", "predict",
            "heads", "generate", "reference")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cardiacnets",
        description="Learn what a cardiac MRI would show from an ECG (CardiacNets).",
    )
    parser.add_argument("--version", action="version", version=f"cardiacnets {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"cardiacnets.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: arguments without the program name; ``None`` reads ``sys.argv``.

    Returns:
        The exit status.
    """
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # ``key=value`` config overrides may follow options (argparse leaves them over).
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = list(args.overrides or []) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    try:
        status = args.func(args)
    except CardiacNetsError as err:
        print(f"cardiacnets {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cardiacnets {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(status or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
