"""Builds the emulated-CUDA test extension on demand (tests/cuda_emulation/emulation_ext.cpp).

The CUDA kernel sources (csrc/cuda/ctc_loss_kernels.cuh, decode_kernels.cuh) and the CUDA host
code (csrc/cuda/ctc_loss_host.h, decode_host.h) are compiled with g++ against tests/cuda_emulation/cuda_emulation.h.
CTC_EXT_EMULATION_ASAN=1 builds it with AddressSanitizer, CTC_EXT_EMULATION_TSAN=1 with
ThreadSanitizer (races between the threads of a block); run python with libasan / libtsan
preloaded, see scripts/ci_cuda.sh.  The build lives under build/ of the checkout, one folder per
flavour and torch version.
"""

import os
import sys

import pytest
import torch
from torch.utils.cpp_extension import load

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The suite's shared helpers (tests/ctc_cases.py), also under --import-mode=importlib (ci_cuda.sh).
sys.path.insert(0, os.path.join(ROOT, "tests"))


def _build():
    asan = os.environ.get("CTC_EXT_EMULATION_ASAN", "0") == "1"
    tsan = os.environ.get("CTC_EXT_EMULATION_TSAN", "0") == "1"
    flavour = "asan" if asan else "tsan" if tsan else "release"
    # One folder per torch version too: an extension built against another torch must not load.
    torch_version = "".join(c if c.isalnum() else "_" for c in torch.__version__)
    build_dir = os.path.join(ROOT, "build", f"cuda_emulation_{flavour}_torch{torch_version}")
    os.makedirs(build_dir, exist_ok=True)
    cflags = ["-O2", "-g", "-pthread", "-DCTC_EXT_CUDA_EMULATION=1"]
    ldflags = ["-pthread"]
    if asan:
        cflags += ["-fsanitize=address", "-fno-omit-frame-pointer"]
        ldflags += ["-fsanitize=address"]
    if tsan:
        cflags += ["-fsanitize=thread"]
        ldflags += ["-fsanitize=thread"]
    return load(
        name=f"ctc_cuda_emulation_{flavour}",
        sources=[
            os.path.join(ROOT, "tests", "cuda_emulation", "emulation_ext.cpp"),
            os.path.join(ROOT, "tests", "cuda_emulation", "emulation_ops.cpp"),
            os.path.join(ROOT, "csrc", "arguments.cpp"),
        ],
        extra_cflags=cflags,
        extra_ldflags=ldflags,
        build_directory=build_dir,
        verbose=False,
    )


@pytest.fixture(scope="session")
def emulated():
    """The emulated CUDA ops: forward, backward, greedy_decode, forced_align, launch_shapes."""
    torch.set_num_threads(1)  # the emulation runs one OS thread per CUDA thread already
    return _build()
