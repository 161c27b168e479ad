"""`mmkeras.errors`: one line and status 2 for user errors, a traceback for bugs."""

import argparse

import pytest

from mmkeras import errors
from mmkeras.configs import ConfigError


def _main(error):
    parser = errors.add_flags(argparse.ArgumentParser())

    @errors.command_line
    def main(argv=None):
        parser.parse_args(argv)
        raise error

    return main


@pytest.mark.parametrize("error", [
    ConfigError("'data.batch_size' must be > 0, got -4."),
    FileNotFoundError(2, "No such file or directory", "/nope/config.yaml"),
])
def test_user_error_is_one_line_and_status_2(error, capsys):
    assert _main(error)([]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
    assert str(error.filename if isinstance(error, OSError) else error) in err


def test_debug_shows_the_traceback(capsys):
    assert _main(ConfigError("bad key 'x'"))(["--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().endswith("error: bad key 'x'")


def test_a_bug_keeps_its_traceback_and_status_1(capsys):
    assert _main(ZeroDivisionError("division by zero"))([]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError" in err and "report it" in err


def test_interrupt_and_argparse_exits(capsys):
    assert _main(KeyboardInterrupt())([]) == 130
    with pytest.raises(SystemExit) as info:  # argparse's own status stays
        _main(ValueError())(["--no-such-flag"])
    assert info.value.code == 2
