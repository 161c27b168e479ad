"""Errors a user can fix, and how every command line reports them.

A command's `main` wrapped by `command_line` (or run by `run_main`):

- a user error, an input the user can fix (`UserError`: a bad config key or value
  (`ConfigError`), a bad manifest row or file (`DataError`), a dataset that cannot be
  prepared (`DatasetError`); or a missing or unreadable file, `FileNotFoundError`,
  `NotADirectoryError`, `IsADirectoryError`, `PermissionError`) prints one line,
  `error: <message>`, to stderr and exits with status 2, the status `argparse` uses for a bad
  argument;
- any other exception is a bug (in mmkeras or in an input it does not check yet): it keeps
  its full traceback, then a last line saying so, and exits with status 1;
- Ctrl-C exits with status 130 and one line;
- `--debug` shows the traceback of user errors too;
- TensorFlow's C++ log (CUDA plugin registration, CPU feature notes, tf.data's end-of-sequence
  notes: lines a CPU user cannot act on) is off unless `--verbose` is given or
  `TF_CPP_MIN_LOG_LEVEL` is already set. It must be set before TensorFlow is imported: the
  commands import TensorFlow inside `main`, after the wrapper has set it.

Usage (the parser declares the two flags so that `--help` lists them):

    parser = argparse.ArgumentParser(...)
    errors.add_flags(parser)

    @errors.command_line
    def main(argv=None):
        args = parser.parse_args(argv)
        ...

    if __name__ == "__main__":
        sys.exit(main())
"""

import functools
import os
import sys
import traceback

DEBUG_FLAG = "--debug"
VERBOSE_FLAG = "--verbose"
USER_ERROR_STATUS = 2
BUG_STATUS = 1


class UserError(Exception):
    """Base of the errors a user fixes by changing an input (config, manifest, dataset)."""


# Besides `UserError`: the OS errors that name a path the user gave.
FILE_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


def is_user_error(error):
    return isinstance(error, (UserError,) + FILE_ERRORS)


def add_flags(parser):
    """Adds `--debug` and `--verbose` to an `argparse` parser; returns it."""
    parser.add_argument(DEBUG_FLAG, action="store_true",
                        help="on an error, print the Python traceback too")
    parser.add_argument(VERBOSE_FLAG, action="store_true",
                        help="show TensorFlow's own log lines (hidden by default)")
    return parser


def quiet_tensorflow(verbose=False):
    """Hides TensorFlow's C++ log unless `verbose` or `TF_CPP_MIN_LOG_LEVEL` is set; must run
    before TensorFlow is imported (afterwards it changes nothing)."""
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _message(error):
    if isinstance(error, FILE_ERRORS) and error.filename is not None and error.strerror:
        return f"{error.strerror}: {error.filename}"
    return str(error).strip() or type(error).__name__


def run_main(main, argv=None):
    """Runs `main(argv)` as a command line (see the module docstring); returns the exit status."""
    args = sys.argv[1:] if argv is None else list(argv)
    debug = DEBUG_FLAG in args
    quiet_tensorflow(verbose=VERBOSE_FLAG in args)
    try:
        status = main(argv)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001 - the point: every error ends here
        if not is_user_error(e):
            traceback.print_exc()
            print(f"error: {type(e).__name__} (a bug, or an input mmkeras does not check): "
                  "please report it with the traceback above", file=sys.stderr)
            return BUG_STATUS
        if debug:
            traceback.print_exc()
        print(f"error: {_message(e)}", file=sys.stderr)
        return USER_ERROR_STATUS
    return 0 if status is None else status


def command_line(main):
    """Decorates a command's `main(argv=None)` with `run_main`."""

    @functools.wraps(main)
    def wrapper(argv=None):
        return run_main(main, argv)

    return wrapper
