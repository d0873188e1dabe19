"""Build of the ctc_ext C++ (and optionally CUDA) extension.

Sources are found under csrc/: every *.cpp is always built; every *.cu is added when torch is a
CUDA build and CUDA_HOME is found (no GPU needed), or forced with FORCE_CUDA=1.
TORCH_CUDA_ARCH_LIST picks the GPU architectures (default 8.0;9.0).  Install with
`pip install --no-build-isolation .` into an environment that already has the torch you will run
with (see the README for why).

Development builds (scripts/setup_env.sh) are incremental: `setup.py build_ext --inplace` keeps
its objects in build/, where ninja recompiles only those whose sources or headers changed (it
reads the compiler's dependency files), then relinks the library; and
the package is registered once with CTC_EXT_REGISTER_ONLY=1 `pip install -e .`, which installs
the package and the ctc-bench script without building the extension a second time.
"""

import glob
import os

import torch
from setuptools import find_packages, setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

ROOT = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(ROOT, "csrc")


def sources(pattern):
    # Relative paths keep the build independent of where the checkout lives.
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(CSRC, "**", pattern), recursive=True))


def want_cuda():
    # A GPU is not needed to build: torch with CUDA plus a CUDA toolkit is enough.
    if os.environ.get("FORCE_CUDA", "0") == "1":
        return True
    return torch.version.cuda is not None and CUDA_HOME is not None


# Ampere and Hopper by default: two device-code builds keep compile time small on small machines.
DEFAULT_CUDA_ARCH_LIST = "8.0;9.0"


def cuda_library_include_dirs():
    # pip-installed CUDA libraries (site-packages/nvidia/cu13/include, ...) hold headers such as
    # cusparse.h that some torch CUDA headers include and a bare toolkit may lack.
    found = []
    for entry in torch.__path__:
        site_packages = os.path.dirname(os.path.abspath(entry))
        found += sorted(glob.glob(os.path.join(site_packages, "nvidia", "cu[0-9]*", "include")))
    return found


def extension():
    if os.environ.get("CTC_EXT_REGISTER_ONLY", "0") == "1":
        return None  # the in-place build provides ctc_ext/_C*.so
    debug = os.environ.get("CTC_EXT_DEBUG", "0") == "1"
    cxx_flags = ["-O0", "-g"] if debug else ["-O3"]
    cxx_flags += ["-std=c++20", "-fvisibility=hidden"]  # torch >= 2.14 headers need C++20
    # at::parallel_for only runs in parallel when the caller is compiled with OpenMP (torch's
    # ATen/Parallel-inl.h falls back to a serial loop without _OPENMP); torch's wheels use libgomp.
    cxx_flags += ["-fopenmp"]
    extra_link = ["-fopenmp"]
    if os.environ.get("CTC_EXT_ASAN", "0") == "1":
        cxx_flags += ["-fsanitize=address", "-fno-omit-frame-pointer"]
        extra_link += ["-fsanitize=address"]
    cpp_sources = sources("*.cpp")
    # Not the limited Python API (abi3): the module binds libtorch's C++ API with pybind11, so the
    # library is tied to one Python version and one torch build anyway.
    define_macros = []
    use_cuda = want_cuda()
    if use_cuda:
        cu_sources = sources("*.cu")
        nvcc_flags = ["-O3", "-std=c++20", "--expt-relaxed-constexpr", "-lineinfo"]
        define_macros.append(("CTC_EXT_WITH_CUDA", "1"))
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_CUDA_ARCH_LIST)
        include_dirs = cuda_library_include_dirs()
        print(
            f"ctc_ext: building CPU + CUDA ({len(cu_sources)} .cu files), CUDA_HOME={CUDA_HOME}, "
            f"TORCH_CUDA_ARCH_LIST={os.environ['TORCH_CUDA_ARCH_LIST']}, extra includes {include_dirs}"
        )
        return CUDAExtension(
            "ctc_ext._C",
            cpp_sources + cu_sources,
            include_dirs=include_dirs,
            define_macros=define_macros,
            extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
            extra_link_args=extra_link,
        )
    print(f"ctc_ext: building CPU only ({len(cpp_sources)} .cpp files)")
    return CppExtension(
        "ctc_ext._C",
        cpp_sources,
        define_macros=define_macros,
        extra_compile_args={"cxx": cxx_flags},
        extra_link_args=extra_link,
    )


EXTENSION = extension()
setup(
    packages=find_packages(include=["ctc_ext", "ctc_ext.*"]),
    ext_modules=[EXTENSION] if EXTENSION is not None else [],
    cmdclass={"build_ext": BuildExtension},
)
