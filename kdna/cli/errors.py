"""How the command line fails: a user's mistake is one line, a bug keeps its traceback.

A *user error* is a bad flag value, a missing or unreadable file, an unknown name or an
offline request for online data: it prints ``kdna: error: <message>`` on stderr and exits with
status 2. It is recognised by its type: :class:`UsageError`, an ``OSError`` about a file or a
connection, an unreadable image, or a ``ValueError`` / ``TypeError`` / ``ImportError`` /
``NotImplementedError`` raised by kdna's own checks (the innermost frame is in kdna). Anything
else is a bug and keeps its traceback. ``--debug`` (or ``KDNA_DEBUG=1``) shows the traceback
of a user error too. Training stopped by Ctrl-C or SIGTERM prints where it saved and the exact
command that resumes it, and exits with 130 or 143.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from kdna.data.imagefiles import BadImageError
from kdna.train.interrupt import TrainingInterrupted

__all__ = ["USAGE_STATUS", "Parser", "UsageError", "guarded", "is_user_error", "resume_command"]

USAGE_STATUS = 2
_FILE_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError,
                PermissionError, ConnectionError, BadImageError)
_CHECK_ERRORS = (ValueError, TypeError, ImportError, NotImplementedError)
_PACKAGE = str(Path(__file__).resolve().parents[1])


class UsageError(ValueError):
    """A flag value or combination the command line refuses."""


class Parser(argparse.ArgumentParser):
    """argparse, with its own errors (an unknown flag, a value that is not a number) as one
    ``kdna: error:`` line and status 2."""

    def error(self, message: str) -> NoReturn:
        command = f"{self.prog.split(' ', 1)[1]}: " if " " in self.prog else ""
        print(f"kdna: error: {command}{message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(USAGE_STATUS)


def is_user_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a user's mistake (see the module docstring) rather than a bug."""
    if isinstance(exc, (UsageError, *_FILE_ERRORS)):
        return True
    if isinstance(exc, OSError) and exc.errno is not None and exc.filename is not None:
        return True  # the operating system refused a named file (disk full, read-only...)
    if not isinstance(exc, _CHECK_ERRORS) or exc.__traceback__ is None:
        return False
    innermost = traceback.extract_tb(exc.__traceback__)[-1].filename
    return str(Path(innermost).resolve()).startswith(_PACKAGE)


def _one_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    if any(line.startswith("Original Traceback") for line in lines):  # a DataLoader worker's
        lines = lines[-1:]
        if ": " in lines[0]:
            lines = [lines[0].split(": ", 1)[1]]
    return " ".join(line.strip() for line in lines) or type(exc).__name__


def resume_command(argv: Sequence[str], checkpoint: Path | str) -> str:
    """The command that resumes the interrupted ``kdna`` run: the same flags, with
    ``--resume checkpoint`` (an earlier ``--resume`` and ``--start-epoch`` dropped)."""
    kept: list[str] = []
    args = list(argv)
    skip = False
    for i, arg in enumerate(args):
        if skip:
            skip = False
            continue
        flag = arg.split("=", 1)[0]
        if flag in ("--resume", "--start-epoch", "--start_epoch"):
            skip = "=" not in arg and i + 1 < len(args)
            continue
        kept.append(arg)
    return shlex.join(["kdna", *kept, "--resume", str(checkpoint)])


def guarded(run: Callable[[], int], argv: Sequence[str], debug: bool) -> int:
    """``run()``, with user errors and interrupts turned into a line and an exit status."""
    debug = debug or os.environ.get("KDNA_DEBUG", "") not in ("", "0")
    try:
        return run()
    except TrainingInterrupted as exc:
        if exc.checkpoint is not None:
            print(f"kdna: interrupted by {exc.signal_name} after step {exc.step}; saved "
                  f"{exc.checkpoint}\nkdna: resume with: {resume_command(argv, exc.checkpoint)}",
                  file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("kdna: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if not is_user_error(exc):
            raise
        if debug:
            traceback.print_exc()
        print(f"kdna: error: {_one_line(exc)}", file=sys.stderr)
        return USAGE_STATUS
