"""Every code block of the README (and of docs/example.md and docs/benchmarks.md, where it sends
newcomers to run things) works as shown: each ```python block runs as it stands in a fresh interpreter, and every line of each
```bash block is checked (the scripts it runs exist, the options it passes parse).  The bash
blocks are not run: they set up venvs and run this very suite."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import ctc_ext
from ctc_ext import bench

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = ["README.md", "docs/example.md", "docs/benchmarks.md"]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def code_blocks(language):
    """(document, index, code) of every block in `language`, in order."""
    found = []
    for document in DOCUMENTS:
        blocks = [code for lang, code in FENCE.findall((ROOT / document).read_text()) if lang == language]
        found += [(document, index, code) for index, code in enumerate(blocks)]
    return found


def block_id(block):
    return f"{block[0]}#{block[1]}"


def test_the_documents_have_code_blocks_and_every_block_names_its_language():
    assert code_blocks("python") and code_blocks("bash")
    for document in DOCUMENTS:
        for language, code in FENCE.findall((ROOT / document).read_text()):
            assert language in ("python", "bash"), f"{document}: a code block without a known language:\n{code}"


@pytest.mark.parametrize("block", code_blocks("python"), ids=block_id)
def test_python_block_runs_as_shown(block, tmp_path):
    document, _, code = block
    if "plot_alignment" in code:
        pytest.importorskip("matplotlib")
    # In a fresh interpreter and an empty folder, importing the ctc_ext these tests import.
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(Path(ctc_ext.__file__).parents[1]), OMP_NUM_THREADS="1", MPLBACKEND="Agg"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"{document} block failed:\n{code}\n--- stderr:\n{result.stderr[-3000:]}"


def check_command(words):
    """Raises AssertionError unless `words` (one shell command, variables assigned in front
    removed) is a command this test knows how to check, and it checks out."""
    program, arguments = words[0], words[1:]
    if program == "bash":
        assert (ROOT / arguments[0]).is_file(), f"no script {arguments[0]}"
    elif program == "ctc-bench":
        bench.build_parser().parse_args(arguments)  # exits (SystemExit) on a bad option
    elif program.endswith("python") or program.endswith("python3"):
        if arguments[:2] == ["-m", "venv"]:
            return
        script = ROOT / arguments[0]
        assert script.is_file(), f"no script {arguments[0]}"
        if script.name == "train_digits.py":
            sys.path.insert(0, str(script.parent))
            try:
                import train_digits
            finally:
                sys.path.remove(str(script.parent))
            train_digits.parse_args(arguments[1:])
    elif program.endswith("pip"):
        assert arguments[0] == "install", words
    else:
        raise AssertionError(f"this test does not know how to check {program!r}: add a rule for it")


@pytest.mark.parametrize("block", code_blocks("bash"), ids=block_id)
def test_bash_block_runs_scripts_that_exist_with_options_that_parse(block):
    for line in block[2].splitlines():
        command = line.split(" #", 1)[0].strip()
        if not command or command.startswith("#"):
            continue
        for part in command.split("&&"):
            words = shlex.split(part)
            while words and re.match(r"^[A-Z_]+=", words[0]):
                words = words[1:]
            check_command(words)


def test_bash_checks_catch_a_missing_script_and_a_bad_option():
    with pytest.raises(AssertionError, match="no script"):
        check_command(["bash", "scripts/no_such_script.sh"])
    with pytest.raises(SystemExit):
        check_command(["ctc-bench", "--no-such-option"])
    with pytest.raises(AssertionError, match="add a rule"):
        check_command(["make", "all"])
