"""scripts/gpu_check.sh without a GPU: argument handling, the commands it would run, and the
summary it writes after success, a failure, a timeout and an unsupported sanitizer.

The stages run against a stand-in interpreter (PYTHON=fake) that answers the environment query
and each stage's command as the test says; the real checks need the GPU machine."""

import json
import os
import stat
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "gpu_check.sh")
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import gpu_check_env  # noqa: E402

STAGES = ["env", "build", "tests", "memcheck", "racecheck", "bench", "torchaudio"]
H200 = "TORCH_VERSION=2.11.0+cu130\nTORCH_CUDA=13.0\nGPU_NAME='NVIDIA H200'\nGPU_ARCH=9.0\n"


def write_executable(path, text):
    path.write_text(textwrap.dedent(text))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def fake_python(tmp_path, env_output=H200, env_status=0, failing="", sleeping=""):
    """A stand-in interpreter: the env query prints `env_output`; the stage whose first arguments
    match `failing` exits 3 after some output, the one matching `sleeping` sleeps; others succeed."""
    env_file = tmp_path / "env_output"
    env_file.write_text(env_output)
    return write_executable(
        tmp_path / "python",
        f"""\
        #!/usr/bin/env bash
        args="$*"
        if [[ "$args" == "scripts/gpu_check_env.py"* ]]; then cat {env_file}; exit {env_status}; fi
        echo "fake python: $args"
        if [ -n "{failing}" ] && [[ "$args" == "{failing}"* ]]; then echo "3 failed, 40 passed"; exit 3; fi
        if [ -n "{sleeping}" ] && [[ "$args" == "{sleeping}"* ]]; then sleep 60; fi
        exit 0
        """,
    )


def run(tmp_path, *args, python=None, sanitizer_output=None):
    env = dict(os.environ, CUDA_HOME=str(tmp_path / "no_cuda"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if sanitizer_output is not None:
        write_executable(bin_dir / "compute-sanitizer", f'#!/usr/bin/env bash\necho "{sanitizer_output}"\nexit 1\n')
    # No compute-sanitizer of the machine's: only the stand-in above, if any.
    env["PATH"] = os.pathsep.join([str(bin_dir)] + [p for p in env["PATH"].split(os.pathsep) if "cuda" not in p])
    if python is not None:
        env["PYTHON"] = python
    return subprocess.run(["bash", SCRIPT, *args], capture_output=True, text=True, env=env, timeout=120)


def summary(out_dir):
    with open(out_dir / "summary.json") as file:
        return json.load(file)


def stage_statuses(report):
    return {stage["name"]: stage["status"] for stage in report["stages"]}


# ----------------------------------------------------------------------------------------------
# Arguments


@pytest.mark.parametrize(
    "args,message",
    [
        ([], "OUT_DIR is required"),
        (["--frobnicate", "out"], "unknown option --frobnicate"),
        (["--budget", "0", "out"], "--budget needs a positive number"),
        (["--budget", "ten", "out"], "--budget needs a positive number"),
        (["--test-timeout"], "--test-timeout needs a value"),
        (["--arch", "sm_90", "out"], "--arch needs a compute capability"),
        (["--skip", "tests,lint", "out"], "unknown stage 'lint'"),
        (["--skip", "env", "out"], "the env stage cannot be skipped"),
        (["a", "b"], "one OUT_DIR only"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(tmp_path, args, message):
    result = run(tmp_path, *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "usage:" in result.stderr


def test_help_describes_every_stage(tmp_path):
    result = run(tmp_path, "--help")
    assert result.returncode == 0
    for name in STAGES:
        assert f"  {name} " in result.stdout


# ----------------------------------------------------------------------------------------------
# Dry run: the commands, no GPU needed


def test_dry_run_prints_the_build_for_the_gpu_and_runs_nothing(tmp_path):
    out = tmp_path / "out"
    result = run(tmp_path, "--dry-run", str(out), python=fake_python(tmp_path, failing="setup.py"))
    assert result.returncode == 0, result.stderr
    build_line = next(line for line in result.stdout.splitlines() if "build (at most" in line)
    assert "FORCE_CUDA=1" in build_line and "TORCH_CUDA_ARCH_LIST=9.0 " in build_line
    assert "setup.py build_ext --inplace" in build_line
    tests_line = next(line for line in result.stdout.splitlines() if "tests (at most" in line)
    assert "CTC_EXT_TEST_TIMEOUT=90" in tests_line and "-m cuda" in tests_line
    assert "fake python: setup.py" not in result.stdout  # printed, not run
    report = summary(out)
    assert report["status"] == "dry-run" and report["dry_run"] is True
    assert [stage["name"] for stage in report["stages"]] == STAGES
    assert set(stage_statuses(report).values()) == {"passed", "dry-run"}
    assert report["environment"]["GPU_NAME"] == "NVIDIA H200"
    assert sorted(os.listdir(out)) == ["summary.json"]


def test_arch_option_overrides_the_gpu_and_budget_caps_every_stage(tmp_path):
    out = tmp_path / "out"
    result = run(tmp_path, "--dry-run", "--arch", "8.6", "--budget", "60", str(out), python=fake_python(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "TORCH_CUDA_ARCH_LIST=8.6 " in result.stdout
    limits = [int(line.split("(at most ")[1].split()[0]) for line in result.stdout.splitlines() if "(at most" in line]
    assert len(limits) == 6 and all(0 < limit <= 60 for limit in limits)
    assert summary(out)["environment"]["TORCH_CUDA_ARCH_LIST"] == "8.6"


def test_dry_run_without_a_gpu_still_prints_the_commands(tmp_path):
    no_gpu = "TORCH_VERSION=2.13.0+cpu\nTORCH_CUDA=none\n"
    out = tmp_path / "out"
    result = run(tmp_path, "--dry-run", str(out), python=fake_python(tmp_path, env_output=no_gpu))
    assert result.returncode == 0, result.stderr
    assert "TORCH_CUDA_ARCH_LIST=\\<compute\\ capability\\ of\\ the\\ GPU\\>" in result.stdout
    assert summary(out)["status"] == "dry-run"


def test_skipped_stages_are_recorded(tmp_path):
    out = tmp_path / "out"
    result = run(tmp_path, "--dry-run", "--skip", "memcheck,racecheck", str(out), python=fake_python(tmp_path))
    assert result.returncode == 0, result.stderr
    statuses = stage_statuses(summary(out))
    assert statuses["memcheck"] == statuses["racecheck"] == "skipped" and statuses["bench"] == "dry-run"


# ----------------------------------------------------------------------------------------------
# Real runs against the stand-in: the summary after success and after each kind of failure


def test_sanitizer_findings_fail_the_run_and_an_unsupported_device_does_not(tmp_path):
    out = tmp_path / "out"
    result = run(tmp_path, str(out), python=fake_python(tmp_path), sanitizer_output="sanitizer: no errors")
    # The stand-in sanitizer exits 1 without "Device not supported": a real failure.
    assert result.returncode == 1
    report = summary(out)
    assert report["status"] == "failed" and report["failed_stage"] == "memcheck"
    assert stage_statuses(report) == {"env": "passed", "build": "passed", "tests": "passed", "memcheck": "failed"}

    out = tmp_path / "out2"
    result = run(tmp_path, str(out), python=fake_python(tmp_path), sanitizer_output="Device not supported")
    assert result.returncode == 0, result.stderr
    report = summary(out)
    assert report["status"] == "passed" and report["failed_stage"] is None
    assert stage_statuses(report) == {
        "env": "passed",
        "build": "passed",
        "tests": "passed",
        "memcheck": "unsupported",
        "racecheck": "unsupported",
        "bench": "passed",
        "torchaudio": "passed",
    }
    assert "fake python: setup.py build_ext --inplace" in (out / "build.log").read_text()
    bench_log = (out / "bench.log").read_text()
    assert "ctc_ext.bench --device cuda" in bench_log and "gpu_bench_torchaudio.py" in bench_log
    assert len(os.listdir(out)) <= 8  # what the device tool brings back


def test_a_missing_sanitizer_is_unsupported_not_a_failure(tmp_path):
    out = tmp_path / "out"
    result = run(tmp_path, str(out), python=fake_python(tmp_path))
    assert result.returncode == 0, result.stderr
    report = summary(out)
    assert stage_statuses(report)["memcheck"] == "unsupported"
    assert "compute-sanitizer not found" in report["stages"][3]["note"]


def test_a_failing_stage_stops_the_run_and_is_named(tmp_path):
    out = tmp_path / "out"
    result = run(tmp_path, str(out), python=fake_python(tmp_path, failing="-m pytest"))
    assert result.returncode == 1
    assert "3 failed, 40 passed" in result.stderr  # the log's tail
    report = summary(out)
    assert report["status"] == "failed" and report["failed_stage"] == "tests"
    assert "exit status 3" in report["message"]
    assert list(stage_statuses(report)) == ["env", "build", "tests"]
    assert not (out / "bench.log").exists()


def test_a_stage_over_its_time_is_stopped_and_reported(tmp_path):
    out = tmp_path / "out"
    result = run(tmp_path, "--budget", "3", str(out), python=fake_python(tmp_path, sleeping="setup.py"))
    assert result.returncode == 1
    report = summary(out)
    assert report["failed_stage"] == "build" and stage_statuses(report)["build"] == "timeout"
    assert report["elapsed_s"] < 30


def test_torch_outside_the_supported_range_fails_clearly(tmp_path):
    error = gpu_check_env.torch_range_error("2.10.1+cu128")
    env_output = f'TORCH_VERSION=2.10.1+cu128\nERROR="{error}"\n'
    out = tmp_path / "out"
    result = run(tmp_path, str(out), python=fake_python(tmp_path, env_output=env_output, env_status=1))
    assert result.returncode == 1
    report = summary(out)
    assert report["failed_stage"] == "env" and "outside the supported range 2.11 to 2.15" in report["message"]
    assert "outside the supported range" in result.stderr


# ----------------------------------------------------------------------------------------------
# The torch range, from pyproject.toml


def test_the_lower_bound_is_pyprojects_requirement():
    with open(os.path.join(ROOT, "pyproject.toml")) as file:
        assert '"torch>=2.11"' in file.read()
    assert gpu_check_env.minimum_torch() == (2, 11)


@pytest.mark.parametrize(
    "version,supported",
    [
        ("2.10.1+cu128", False),
        ("2.11.0+cu130", True),
        ("2.13.0+cpu", True),
        ("2.14.1", True),
        ("2.15.0", True),
        ("2.16.0.dev20270101+cu130", False),
        ("1.13.1", False),
    ],
)
def test_torch_range(version, supported):
    assert (gpu_check_env.torch_range_error(version) is None) == supported


def test_env_query_of_the_installed_torch_without_a_gpu():
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "gpu_check_env.py"), "--no-gpu-ok"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    import torch

    assert f"TORCH_VERSION={torch.__version__}" in result.stdout
    if not torch.cuda.is_available():
        assert "GPU_ARCH" not in result.stdout
    assert result.returncode == (0 if gpu_check_env.torch_range_error(torch.__version__) is None else 1)


# ----------------------------------------------------------------------------------------------
# The per-test timeout of tests/conftest.py (gpu_check.sh sets CTC_EXT_TEST_TIMEOUT)


def run_pytest_with_timeout(tmp_path, timeout_value, body):
    (tmp_path / "test_sleepy.py").write_text(textwrap.dedent(body))
    env = dict(os.environ, CTC_EXT_TEST_TIMEOUT=timeout_value, PYTHONPATH=os.path.join(ROOT, "tests"))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "conftest", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )


def test_a_test_over_its_time_ends_the_run_naming_it(tmp_path):
    result = run_pytest_with_timeout(
        tmp_path,
        "2",
        """\
        import time

        def test_quick():
            pass

        def test_stuck_in_a_call():
            time.sleep(60)
        """,
    )
    assert result.returncode != 0
    assert "Timeout (0:00:02)!" in result.stderr and "test_stuck_in_a_call" in result.stderr


def test_a_bad_timeout_value_is_a_usage_error(tmp_path):
    result = run_pytest_with_timeout(tmp_path, "soon", "def test_quick():\n    pass\n")
    assert result.returncode == 4  # pytest's usage error
    assert "CTC_EXT_TEST_TIMEOUT must be a number of seconds" in result.stderr


# ----------------------------------------------------------------------------------------------
# scripts/gpu_kernels_smoke.py, the sanitizers' workload: its problems and comparisons run as
# written (on the CPU against the CPU op here; on the GPU there)


def test_smoke_checks_run_on_the_cpu():
    import gpu_kernels_smoke
    import torch

    done = gpu_kernels_smoke.run_checks("cpu")
    assert len(done) == 9 and any("float16" in line for line in done)
    has_cuda = torch._C._dispatch_has_kernel_for_dispatch_key("ctc_ext::ctc_loss_forward", "CUDA")
    if not has_cuda:  # a CPU-only build: the coverage check names what has no CUDA kernel
        with pytest.raises(AssertionError, match="ctc_ext::ctc_loss_forward"):
            gpu_kernels_smoke.check_kernel_coverage()
