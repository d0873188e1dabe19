"""Runs hostile inputs in a child interpreter, so that a crash (a signal, heap corruption caught
by glibc) fails one test instead of killing the whole run."""

import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_isolated(code: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
    """Runs `code` (dedented) in a fresh Python with the tests' sys.path; fails on a signal."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )
    if result.returncode < 0:
        raise AssertionError(f"the child died of signal {-result.returncode}:\n{result.stderr[-4000:]}")
    return result


def assert_isolated_ok(code: str, timeout: float = 120.0) -> str:
    """Runs `code` isolated and requires a clean exit; returns its standard output."""
    result = run_isolated(code, timeout)
    assert result.returncode == 0, f"exit code {result.returncode}:\n{result.stderr[-4000:]}"
    return result.stdout
