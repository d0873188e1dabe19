"""What scripts/gpu_check.sh needs to know about this machine, as KEY=VALUE lines for bash.

    python scripts/gpu_check_env.py [--torch-version VERSION] [--no-gpu-ok]

Checks the installed torch against the supported range (the lower bound is the `torch>=`
requirement of pyproject.toml, the upper the newest release tested, TESTED_UP_TO below) and
reads the GPU's name and compute capability, which gives TORCH_CUDA_ARCH_LIST (that GPU only).
Exit status 0 when everything the check needs is there; otherwise 1, with ERROR=... saying why.
--torch-version checks a version string instead of the installed torch's (tests use it);
--no-gpu-ok reports a missing GPU without failing (gpu_check.sh --dry-run).
"""

import argparse
import os
import re
import shlex
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTED_UP_TO = (2, 15)  # the newest torch minor release the suite has run against


def minimum_torch():
    """(major, minor) of the `torch>=X.Y` requirement in pyproject.toml: one place for the bound."""
    with open(os.path.join(ROOT, "pyproject.toml")) as file:
        match = re.search(r'"torch>=(\d+)\.(\d+)', file.read())
    if match is None:
        raise SystemExit("gpu_check_env: no torch>=X.Y requirement in pyproject.toml")
    return int(match.group(1)), int(match.group(2))


def release(version):
    """(major, minor) of a torch version string such as 2.11.0+cu130 or 2.15.0.dev20261101."""
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None:
        raise ValueError(f"not a torch version: {version!r}")
    return int(match.group(1)), int(match.group(2))


def torch_range_error(version):
    low, high = minimum_torch(), TESTED_UP_TO
    if not low <= release(version) <= high:
        return (
            f"torch {version} is outside the supported range {low[0]}.{low[1]} to {high[0]}.{high[1]} "
            "(pyproject.toml, docs/cuda.md); install a torch in that range"
        )
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--torch-version", default=None, help="check this version instead of the installed torch's")
    parser.add_argument("--no-gpu-ok", action="store_true", help="a missing GPU is not an error")
    options = parser.parse_args(argv)
    facts, error = {}, None
    if options.torch_version is not None:
        facts["TORCH_VERSION"] = options.torch_version
        error = torch_range_error(options.torch_version)
    else:
        import torch

        facts["TORCH_VERSION"] = torch.__version__
        facts["TORCH_CUDA"] = torch.version.cuda or "none"
        error = torch_range_error(torch.__version__)
        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(0)
            facts["GPU_NAME"] = torch.cuda.get_device_name(0)
            facts["GPU_ARCH"] = f"{major}.{minor}"
        elif error is None and not options.no_gpu_ok:
            error = (
                "no CUDA device visible to torch "
                f"(torch {torch.__version__}, built with CUDA {torch.version.cuda or 'none'})"
            )
    facts["PYTHON_VERSION"] = sys.version.split()[0]
    if error is not None:
        facts["ERROR"] = error
    for key, value in facts.items():
        print(f"{key}={shlex.quote(str(value))}")
    return 1 if error is not None else 0


if __name__ == "__main__":
    sys.exit(main())
