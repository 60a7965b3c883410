"""The `qsp` command.

Each subcommand is a module in this package with `add_parser(subparsers)` (which
registers its arguments and sets `func`) listed in `COMMANDS`. User errors (bad model
name, bad parameter, bad dataset) print one line and exit with status 2, never a
traceback; set QSP_DEBUG=1 to see the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

#: Subcommand modules, in the order `qsp --help` lists them.
COMMANDS = ("models", "simulate", "fit", "trial", "optimize", "petab")


class UserError(Exception):
    """An error in what the user asked for: reported in one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qsp",
        description="Differentiable QSP for oncology dose optimization. "
        "Run without a command for the main job (see `qsp main --help`).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"qsp.cli.{name}").add_parser(sub)
    # Not named `main`: a submodule qsp.cli.main would shadow the function `main` here.
    importlib.import_module("qsp.cli.mainjob").add_parser(sub)
    return parser


def _compilation_cache():
    """Keep compiled solves between runs of the command (JAX's persistent compilation
    cache), so only the first `qsp trial crs` pays the 1-2 minute compile. The
    directory is `$JAX_COMPILATION_CACHE_DIR` if set (JAX reads it itself), else
    `$XDG_CACHE_HOME/qsp/jax` (default `~/.cache/qsp/jax`); `QSP_NO_CACHE=1` turns it
    off. A library import never does this: only the command line."""
    if os.environ.get("QSP_NO_CACHE") == "1" or os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    import jax

    if jax.config.jax_compilation_cache_dir:
        return
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    jax.config.update("jax_compilation_cache_dir", os.path.join(root, "qsp", "jax"))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _compilation_cache()
    parser = build_parser()
    if not argv:
        argv = ["main"]
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (UserError, ValueError, KeyError, TypeError, FileNotFoundError) as err:
        if os.environ.get("QSP_DEBUG") == "1":
            raise
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"qsp {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
