"""The code style setup.cfg configures is the code style of the tree: flake8 and isort, run here
so the README's test command (and CI) enforces them."""
import subprocess
import sys

import pytest

from .conftest import REPO


@pytest.mark.parametrize('command', [
    ('flake8', '.'),
    ('isort', '--check-only', '--diff', '.'),
], ids=['flake8', 'isort'])
def test_style(command):
    proc = subprocess.run([sys.executable, '-m', *command], cwd=REPO, capture_output=True,
                          text=True)
    assert proc.returncode == 0, f'{" ".join(command)} found:\n{proc.stdout}{proc.stderr}'
