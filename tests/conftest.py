import pytest
from ctc_cases import forced_kernel_path


@pytest.fixture
def kernel_path(request):
    """Parametrised indirectly with (isa, schedule) (test_cpu_kernels.PATHS): the CPU kernels run on
    that instruction set and schedule for the test."""
    isa, schedule = request.param
    with forced_kernel_path(isa, schedule):
        yield isa, schedule
