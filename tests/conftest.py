"""The suite's device fixture and per-test timeout.

`device`: every spec test that takes it runs once per device, "cpu" and "cuda" (the CUDA case is
skipped without a GPU).  Without a GPU the CUDA kernels still run, emulated on the CPU, in
tests/cuda_emulation, which draws its inputs from the same builders (tests/ctc_cases.py).
Tests that need a GPU whatever the parameter take `cuda_device` instead.  Both kinds of CUDA case
are marked `cuda`: `pytest -m cuda` runs them alone.

CTC_EXT_TEST_TIMEOUT=SECONDS (scripts/gpu_check.sh sets it): a test that runs longer dumps every
thread's stack and ends the run (faulthandler's watchdog thread fires even while the main thread
waits inside a CUDA call, where a signal handler would never run).
"""

import faulthandler
import os
import sys

import pytest
import torch

# The suite's shared helpers (ctc_cases.py, isolation.py), also under --import-mode=importlib.
TESTS = os.path.dirname(os.path.abspath(__file__))
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)

CUDA_SKIP_REASON = "no CUDA device (the CUDA kernels run emulated on the CPU in tests/cuda_emulation)"
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason=CUDA_SKIP_REASON)),
]


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param


@pytest.fixture
def cuda_device() -> str:
    if not torch.cuda.is_available():
        pytest.skip(CUDA_SKIP_REASON)
    return "cuda"


def pytest_collection_modifyitems(config, items):
    """Marks every CUDA case `cuda`, so that `pytest -m cuda` runs exactly those (gpu_check.sh)."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_cuda = callspec is not None and callspec.params.get("device") == "cuda"
        if on_cuda or "cuda_device" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cuda)


def _timeout_seconds():
    value = os.environ.get("CTC_EXT_TEST_TIMEOUT", "")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise pytest.UsageError(f"CTC_EXT_TEST_TIMEOUT must be a number of seconds, got {value!r}") from None
    if seconds <= 0:
        raise pytest.UsageError(f"CTC_EXT_TEST_TIMEOUT must be positive, got {value!r}")
    return seconds


def _uncaptured_stderr(config) -> int:
    """The file descriptor of the terminal's stderr: while a test runs, pytest points fd 2 at its
    capture file, which is lost when the watchdog ends the process."""
    capture_manager = config.pluginmanager.getplugin("capturemanager")
    global_capture = getattr(capture_manager, "_global_capturing", None)
    saved = getattr(getattr(global_capture, "err", None), "targetfd_save", None)
    return saved if isinstance(saved, int) else sys.__stderr__.fileno()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    seconds = _timeout_seconds()
    if seconds is None:
        yield
        return
    # The dump's Python frames name the test (its file, line and function).
    faulthandler.dump_traceback_later(seconds, exit=True, file=_uncaptured_stderr(item.config))
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


@pytest.fixture
def kernel_path(request):
    """Parametrised indirectly with (isa, schedule) (test_cpu_kernels.PATHS): the CPU kernels run on
    that instruction set and schedule for the test."""
    from ctc_cases import forced_kernel_path

    isa, schedule = request.param
    with forced_kernel_path(isa, schedule):
        yield isa, schedule
