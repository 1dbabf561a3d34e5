"""`vitkit <command>`: a thin layer that parses arguments and calls the library.

Each command lives in `vitkit/commands/<name>.py` with `register(subparsers)`, which adds its parser and sets
`func(args) -> int | None`. Bad input (an unknown flag, a value of the wrong type, a missing file, a corrupt
checkpoint, a full disk) prints one line and exits with code 2; set VITKIT_DEBUG=1 to see the traceback instead.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import pkgutil
import re
import sys
import warnings

from . import commands
from .errors import CheckpointError, GuessWarning, UsageError

EXPECTED_ERRORS = (CheckpointError, UsageError, OSError, ValueError)  # OSError: missing files, permissions, full disks


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error: the message and where to find help, not the whole usage text (which is
    forty lines for `vitkit train`). Subcommand parsers are of this class too."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="vitkit", description="Vision Transformers: models, checkpoints, training, analysis.")
    parser.add_argument("--version", action="version", version=f"vitkit {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = [importlib.import_module(f"{commands.__name__}.{info.name}")
               for info in pkgutil.iter_modules(commands.__path__) if not info.name.startswith("_")]
    for module in sorted(modules, key=lambda m: (getattr(m, "ORDER", 50), m.__name__)):
        module.register(sub)
    return parser


def _version() -> str:
    from . import __version__

    return __version__


_default_showwarning = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None, parser=None):
    """vitkit's own warnings (a guessed value) as one line naming the command, not Python's two-line format; a guess
    names the command's flags that say the values (as assumed: correct what is wrong)."""
    if not issubclass(category, GuessWarning):
        _default_showwarning(message, category, filename, lineno, file, line)
        return
    guessed = getattr(message, "guessed", None)
    flags = {s for action in parser._actions for s in action.option_strings} if parser is not None else set()
    if guessed and all("--" + name.replace("_", "-") in flags for name in guessed):
        from .commands._args import hint_flags

        message = f"{message.what}; to say them, give (correcting what is wrong): {hint_flags(guessed)}"
    print(f"vitkit: warning: {message}", file=sys.stderr)


_PYTHON_HINT = re.compile(r"\b(pass |given as |set )([a-z][a-z0-9_]*)= ?")
_PYTHON_VALUE = re.compile(r"\b([a-z][a-z0-9_]*)=(-?[\w.]+) contradicts")


def flag_words(message: str, parser: argparse.ArgumentParser | None) -> str:
    """A library message's Python spelling ("pass num_heads= (for example 3)", "num_heads=4 contradicts it") in the
    command line's ("pass --num-heads (for example 3)", "--num-heads 4 contradicts it"), for the keywords that the
    command has a flag for; others are left as they are."""
    if parser is None:
        return message
    flags = {s for action in parser._actions for s in action.option_strings}

    def flag(name: str) -> str | None:
        spelt = "--" + name.replace("_", "-")
        return spelt if spelt in flags else None

    message = _PYTHON_HINT.sub(lambda m: f"{m[1]}{flag(m[2])} " if flag(m[2]) else m[0], message)
    message = _PYTHON_VALUE.sub(lambda m: f"{flag(m[1])} {m[2]} contradicts" if flag(m[1]) else m[0], message)
    return message


def _command_parser(parser: argparse.ArgumentParser, args) -> argparse.ArgumentParser | None:
    """The (sub)parser that read `args`: `vitkit inspect attention`'s, say."""
    found = None
    current = parser
    while current is not None:
        found, subs = current, [a for a in current._actions if isinstance(a, argparse._SubParsersAction)]
        current = None
        for action in subs:
            chosen = getattr(args, action.dest, None)
            if chosen in action.choices:
                current = action.choices[chosen]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(None if argv is None else [str(a) for a in argv])
    if unknown:  # named after the subcommand that was given them, not after `vitkit`
        prog = " ".join(["vitkit", *[v for v in (getattr(args, "command", None),) if v]])
        print(f"{prog}: error: unrecognized arguments: {' '.join(unknown)} (see {prog} --help)", file=sys.stderr)
        return 2
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", GuessWarning)
            warnings.showwarning = functools.partial(_show_warning, parser=_command_parser(parser, args))
            from .commands._args import finish

            finish(args)
            code = args.func(args)
    except EXPECTED_ERRORS as e:
        if os.environ.get("VITKIT_DEBUG"):
            raise
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"vitkit: error: {flag_words(message, _command_parser(parser, args))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vitkit: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
