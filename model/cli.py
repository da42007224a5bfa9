"""The entry wrapper of every ``python -m`` CLI in the stack: input errors as one line and an exit code.

A user's mistake (a missing file, a truncated video, a NaN in a trajectory, a bad option value) is reported
as one ``error: …`` line on stderr with exit code ``EXIT_INPUT_ERROR`` (3; argparse's own usage errors stay
2), and the traceback only with ``--debug`` (or ``SANA_WM_DEBUG=1``). Anything else is a bug and keeps its
traceback (exit 1). Library callers (KFP tasks, DVC, tests) call ``main(argv)`` directly and get the
exception itself.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

EXIT_INPUT_ERROR = 3
EXIT_INTERRUPTED = 130
# What a wrong input raises across the stack (VideoDecodeError, CheckpointMismatchError, RequestError, and
# the config validation errors are ValueErrors).
INPUT_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, NotADirectoryError,
                                                 IsADirectoryError, PermissionError)


def run(main: Callable[[list[str]], int | None], argv: Sequence[str] | None = None) -> int:
    """Call ``main(argv)`` (``sys.argv[1:]`` by default, ``--debug`` removed) and map errors to exit codes."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("SANA_WM_DEBUG", "") not in ("", "0")
    args = [a for a in args if a != "--debug"]
    try:
        rc = main(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except INPUT_ERRORS as e:
        if debug:
            raise
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"error: {message} (run with --debug for the traceback)", file=sys.stderr)
        return EXIT_INPUT_ERROR
    return 0 if rc is None else int(rc)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """``--help`` of every CLI: the description as written, and each option's default shown."""
