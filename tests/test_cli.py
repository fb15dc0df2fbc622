"""The top-level `lorabooth` command dispatches to each layer's own CLI."""

import subprocess
import sys

from lorabooth import __version__
from lorabooth.cli import COMMANDS, main


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_version(capsys):
    assert main(["version"]) == 0
    assert capsys.readouterr().out.strip() == __version__


def test_unknown_command_is_a_clear_error(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_console_script_is_installed():
    result = subprocess.run([sys.executable, "-m", "lorabooth.cli", "version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == __version__
