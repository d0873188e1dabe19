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


# ---------------------------------------------------------------------------------------------
# Many hostile cases, one child for all of them until one kills it.

_CASE_RUNNER = r"""
import json, sys, traceback
cases = json.loads(sys.stdin.read())
setup = compile(cases["setup"], "<setup>", "exec")
for index, (name, code) in enumerate(cases["cases"]):
    print("START", index, flush=True)
    namespace = {}
    exec(setup, namespace)  # afresh for every case: a case may change its tensors in place
    try:
        exec(compile(code, name, "exec"), namespace)
        outcome = {"raised": None}
    except Exception as error:  # noqa: BLE001  (any Python exception is a clean outcome)
        outcome = {"raised": type(error).__name__, "mro": [c.__name__ for c in type(error).__mro__],
                   "message": str(error)[:500]}
    print("DONE", index, json.dumps(outcome), flush=True)
"""


def run_hostile_cases(setup: str, cases, timeout: float = 300.0):
    """Runs each (name, code) of `cases` after `setup`, in as few children as crashes allow.

    All cases share one child interpreter (starting one costs seconds), each with the names
    `setup` defines, run afresh for it; a case that kills it
    (a signal, an abort from heap corruption) is recorded and the rest resume in a fresh child.
    Returns {name: outcome}, where outcome is {"raised": None} (returned normally),
    {"raised": type name, "mro": [...], "message": ...} (a Python exception), or
    {"crashed": description} (the child died in that case).
    """
    import json

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    cases = list(cases)
    outcomes = {}
    start = 0
    while start < len(cases):
        batch = cases[start:]
        payload = json.dumps({"setup": textwrap.dedent(setup), "cases": [(n, textwrap.dedent(c)) for n, c in batch]})
        result = subprocess.run(
            [sys.executable, "-c", _CASE_RUNNER],
            input=payload,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=ROOT,
        )
        running = None
        for line in result.stdout.splitlines():
            if line.startswith("START "):
                running = int(line.split()[1])
            elif line.startswith("DONE "):
                _, index, outcome = line.split(" ", 2)
                outcomes[batch[int(index)][0]] = json.loads(outcome)
                running = None
        if result.returncode == 0 and running is None:
            break
        if running is None:  # died outside any case (setup failed, or at exit)
            raise AssertionError(f"the case runner failed (exit {result.returncode}):\n{result.stderr[-4000:]}")
        how = f"signal {-result.returncode}" if result.returncode < 0 else f"exit code {result.returncode}"
        outcomes[batch[running][0]] = {"crashed": f"{how}: {result.stderr[-2000:]}"}
        start += running + 1
    return outcomes
