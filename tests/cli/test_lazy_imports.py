"""The command line is built without torch: ``ehrlens --help`` and the help of commands that
list no registry import neither torch nor the library's heavy layers (checked in a fresh
process through ``sys.modules``; start-up time itself is measured in
``benchmarks/cli_startup.py``)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ehrlens.cli import options
from ehrlens.data import dataset

PROBE = (
    "import sys\n"
    "from ehrlens.cli.app import main\n"
    "try:\n"
    "    main(sys.argv[1:], prog_name='ehrlens')\n"
    "except SystemExit as e:\n"
    "    assert e.code in (0, None), e.code\n"
    "heavy = sorted(m for m in ('torch', 'numpy', 'pandas', 'pyarrow', 'ehrlens.data',\n"
    "    'ehrlens.models', 'ehrlens.interpret', 'ehrlens.explain') if m in sys.modules)\n"
    "print('HEAVY=' + ','.join(heavy))\n"
)


def heavy_modules(*argv: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, check=True
    )
    return done.stdout.rsplit("HEAVY=", 1)[1].strip()


@pytest.mark.parametrize(
    "argv",
    [
        ("--help",),
        ("--version",),
        ("synthetic", "--help"),
        ("report", "--help"),
        ("demo", "--help"),
    ],
)
def test_help_imports_nothing_heavy(argv):
    assert heavy_modules(*argv) == ""


def test_import_ehrlens_is_light_and_trainer_still_loads():
    code = (
        "import sys, ehrlens\n"
        "assert 'torch' not in sys.modules, 'import ehrlens imported torch'\n"
        "from ehrlens import Trainer\n"
        "assert 'torch' in sys.modules and Trainer.__name__ == 'Trainer'\n"
        "try:\n"
        "    ehrlens.nothing\n"
        "except AttributeError as e:\n"
        "    assert 'nothing' in str(e)\n"
        "else:\n"
        "    raise AssertionError('no AttributeError')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_copied_size_caps_match_the_dataset():
    assert options.MAX_STEPS == dataset.MAX_STEPS
    assert options.MAX_CODES_PER_STEP == dataset.MAX_CODES_PER_STEP


def test_the_model_choice_is_read_when_needed():
    from ehrlens.models import model_classes

    names = options.LazyChoice(options.model_names)
    assert names._choices is None  # nothing read at construction
    assert list(names.choices) == list(model_classes())
    assert names.convert("stagenet", None, None) == "stagenet"
