"""ctc-bench: its rows, its options and its errors (no timing is asserted)."""

import json
import subprocess
import sys
import time

import pytest
import torch

from ctc_ext import bench

ROW_KEYS = {
    "T",
    "N",
    "C",
    "S",
    "device",
    "dtype",
    "builtin_fwd_ms",
    "ours_fwd_ms",
    "builtin_train_ms",
    "ours_train_ms",
    "speedup_fwd",
    "speedup_train",
    "builtin_peak_mb",
    "ours_peak_mb",
    "max_loss_diff",
    "max_grad_diff",
    "speedup_fwd_iqr",
    "speedup_train_iqr",
    "speedup_fwd_spread",
    "speedup_train_spread",
    "unsteady",
    "cpu_share",
}


def run_json(tmp_path, *args):
    path = tmp_path / "rows.json"
    assert bench.main(["--repeat", "1", "--device", "cpu", "--json", str(path), *args]) == 0
    return json.loads(path.read_text())


def test_json_has_one_row_per_shape_and_dtype_with_every_key(tmp_path, capsys):
    rows = run_json(tmp_path, "--shapes", "20,2,5,4", "12,3,40,3", "--dtype", "float32,float64")
    assert len(rows) == 4
    assert {(r["T"], r["N"], r["C"], r["S"], r["dtype"]) for r in rows} == {
        (20, 2, 5, 4, "float32"),
        (12, 3, 40, 3, "float32"),
        (20, 2, 5, 4, "float64"),
        (12, 3, 40, 3, "float64"),
    }
    for row in rows:
        assert ROW_KEYS <= row.keys()
        assert row["device"] == "cpu"
        assert row["builtin_fwd_ms"] > 0 and row["ours_train_ms"] > 0
        assert row["speedup_train"] == pytest.approx(row["builtin_train_ms"] / row["ours_train_ms"])
    # The accuracy columns really compare the two: float64 agrees to rounding.
    for row in rows:
        bound = 1e-9 if row["dtype"] == "float64" else 1e-3
        assert row["max_loss_diff"] <= bound and row["max_grad_diff"] <= bound
    table = capsys.readouterr().out
    assert "20x2x5x4" in table and "fwd+bwd" in table and "(IQR)" in table


def test_half_precision_rows_compare_with_the_builtin_on_float32(tmp_path, capsys):
    rows = run_json(tmp_path, "--shapes", "16,2,6,3", "--dtype", "bfloat16")
    assert rows[0]["dtype"] == "bfloat16"
    assert "x.float()" in rows[0]["builtin"]
    assert rows[0]["max_grad_diff"] < 0.05  # bfloat16 gradient against the float32 one
    assert "x.float()" in capsys.readouterr().out


def test_peak_memory_is_measured_on_linux(tmp_path):
    rows = run_json(tmp_path, "--shapes", "200,8,500,20")
    if sys.platform.startswith("linux"):
        # Both pipelines allocate at least the (T, N, C) float32 gradient: 3 MiB here.
        assert rows[0]["builtin_peak_mb"] > 2.5 and rows[0]["ours_peak_mb"] > 2.5


@pytest.mark.parametrize(
    "args, message",
    [
        (["--shapes", "1,2,3"], "four integers"),
        (["--shapes", "10,2,x,3"], "four integers"),
        (["--shapes", "10,0,5,3"], "T, N, S >= 1"),
        (["--shapes", "10,2,5,9"], "at most 0.8 T"),
        (["--repeat", "0"], "positive integer"),
        (["--threads", "two"], "positive integer"),
        (["--dtype", "float8"], "--dtype"),
        (["--dtype", "float32,,float64"], "--dtype"),
        (["--dtype", "float32,"], "--dtype"),
        (["--device", "tpu"], "--device"),
        (["--json", "/nonexistent-dir/rows.json"], "directory does not exist"),
        (["--frobnicate"], "unrecognized arguments"),
    ],
)
def test_bad_options_are_argparse_errors(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(args)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_cuda_without_cuda_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--device", "cuda", "--shapes", "10,1,5,2"])
    assert exit_info.value.code == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_plot_writes_a_png_or_explains_the_missing_extra(tmp_path, capsys):
    path = tmp_path / "speedup.png"
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        with pytest.raises(SystemExit) as exit_info:
            bench.main(["--plot", str(path), "--shapes", "10,1,5,2", "--repeat", "1"])
        assert exit_info.value.code == 2
        assert "pip install 'ctc_ext[plot]'" in capsys.readouterr().err
    else:
        assert bench.main(["--plot", str(path), "--shapes", "10,1,5,2", "20,2,9,4", "--repeat", "1"]) == 0
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_module_entry_point_prints_help_with_the_memory_method():
    result = subprocess.run(
        [sys.executable, "-m", "ctc_ext.bench", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0
    assert "--shapes" in result.stdout and "VmHWM" in result.stdout


def test_decode_rows_report_throughput_of_every_decoder(tmp_path, capsys):
    path = tmp_path / "rows.json"
    args = ["--shapes", "20,2,7,4", "--repeat", "1", "--decode", "--decode-thread-pairs", "0", "--json", str(path)]
    assert bench.main(args) in (0, None)
    rows = json.loads(path.read_text())
    decode_ops = {row["op"].split(" ")[0] for row in rows if "op" in row}
    assert decode_ops == {"greedy_decode", "beam_search", "forced_align"}
    assert all(row["frames_per_s"] > 0 for row in rows if "op" in row)
    assert "frames/s" in capsys.readouterr().out


def test_speedup_spread_is_the_interquartile_range_of_paired_runs():
    # Pairs (built-in, ours): ratios 10, 10, 10, 10 and one stalled run of ours (ratio 0.1).
    speedup, (q1, q3), spread = bench.speedup_stats([10.0] * 5, [1.0, 1.0, 1.0, 1.0, 100.0])
    assert speedup == 10.0 and (q1, q3) == (10.0, 10.0) and spread == 0.0
    # Ratios 2, 4, 6, 8, 10: quartiles (inclusive) 4 and 8, spread (8 - 4) / 6.
    speedup, (q1, q3), spread = bench.speedup_stats([2.0, 4.0, 6.0, 8.0, 10.0], [1.0] * 5)
    assert speedup == 6.0 and (q1, q3) == (4.0, 8.0) and spread == pytest.approx(4 / 6)
    assert bench.speedup_stats([3.0], [1.5]) == (2.0, [2.0, 2.0], 0.0)


def test_unsteady_rows_are_flagged_in_the_table_and_json(tmp_path, capsys, monkeypatch):
    # Every other run of ours is 20 times slower, as on a machine whose cores are taken: the
    # per-run ratios spread far more than the threshold.
    calls = {"n": 0}
    real_ours_loss = bench.ours_loss

    def stalling_ours_loss(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] % 2:
            time.sleep(0.02)
        return real_ours_loss(*args, **kwargs)

    monkeypatch.setattr(bench, "ours_loss", stalling_ours_loss)
    rows = run_json(tmp_path, "--shapes", "20,2,5,4", "--repeat", "6")
    assert rows[0]["unsteady"] is True
    assert rows[0]["speedup_train_spread"] > bench.UNSTEADY_SPREAD
    out = capsys.readouterr().out
    assert "unsteady" in out and "warning: 1 row(s) marked unsteady" in out


def test_rows_whose_every_run_waited_are_flagged_although_their_spread_is_narrow(tmp_path, monkeypatch):
    # Every call of ours waits 20 ms without the CPU, as a 2-thread call does for its second
    # thread when the cores are taken: the ratios agree with each other, the CPU share gives it away.
    real_ours_loss = bench.ours_loss

    def waiting_ours_loss(*args, **kwargs):
        time.sleep(0.02)
        return real_ours_loss(*args, **kwargs)

    monkeypatch.setattr(bench, "ours_loss", waiting_ours_loss)
    row = run_json(tmp_path, "--shapes", "20,2,5,4", "--repeat", "5")[0]
    assert row["cpu_share"] < bench.MIN_CPU_SHARE and row["unsteady"] is True


def test_decode_aligns_targets_of_the_given_length(tmp_path):
    path = tmp_path / "rows.json"
    args = ["--shapes", "40,2,7,9", "--repeat", "1", "--decode", "--decode-thread-pairs", "0", "--json", str(path)]
    assert bench.main(args) == 0
    aligned = [row for row in json.loads(path.read_text()) if row.get("op", "").startswith("forced_align")]
    assert [row["op"] for row in aligned] == ["forced_align (S=9)"]


def test_thread_scaling_rows_pair_the_runs_and_report_their_cpu_use():
    from ctc_ext import bench_decode

    rows = bench_decode.thread_scaling_rows(pairs=3, N=4, T=30, beam_width=4)
    assert [row["lm"] for row in rows] == [False, True]
    for row in rows:
        runs = row["runs"]
        assert len(runs) == 3 and all(run[key] > 0 for run in runs for key in ("one_wall", "many_wall"))
        ratios = sorted(run["one_wall"] / run["many_wall"] for run in runs)
        assert row["ratio_quartiles"][1] == pytest.approx(ratios[1])
        uses = sorted(run["many_cpu"] / run["many_wall"] for run in runs)
        assert row["utilisation_threads"] == pytest.approx(uses[1])
        full = [
            run["one_wall"] / run["many_wall"]
            for run in runs
            if run["one_cpu"] >= 0.9 * run["one_wall"] and run["many_cpu"] >= 1.8 * run["many_wall"]
        ]
        assert row["full_core_pairs"] == len(full)
    table = bench_decode.format_thread_scaling_table(rows)
    assert table.count("\n") == 3 and "(IQR" in table
