"""DistributedDataParallel over 2 local processes (gloo on loopback): one step over a global
batch gives the gradients of one single-process step over that batch; and the example's --ddp 2
runs end to end."""

import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import ctc_ext

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import train_digits  # noqa: E402  (the example is a script, not a package; the workers import it too)

WORLD_SIZE = 2
GLOBAL_BATCH = 8
TIMEOUT_S = 120

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="torch.distributed with gloo is not available"
)


def global_batch():
    """Lines from random 'digit' images: the test needs neither scikit-learn nor a download."""
    rng = np.random.default_rng(0)
    images = rng.uniform(0.0, 1.0, size=(40, 8, 8)).astype(np.float32)
    return train_digits.compose_lines(images, rng.integers(0, 10, 40), np.arange(40), GLOBAL_BATCH, rng)


def fresh_model():
    torch.manual_seed(0)
    return train_digits.LineReader()


def gradients_of_one_step(model, lines):
    loss = train_digits.training_loss(model, lines, train_digits.ctc_ext_loss(), torch.device("cpu"))
    loss.backward()
    return {name: parameter.grad.clone() for name, parameter in model.named_parameters()}


def ddp_worker(rank, port, out_dir):
    torch.set_num_threads(1)
    train_digits.init_process_group(rank, WORLD_SIZE, port, "gloo")
    try:
        model = torch.nn.parallel.DistributedDataParallel(fresh_model())
        shard_size = GLOBAL_BATCH // WORLD_SIZE
        shard = global_batch().select(slice(rank * shard_size, (rank + 1) * shard_size))
        loss = train_digits.training_loss(model, shard, train_digits.ctc_ext_loss(), torch.device("cpu"))
        loss.backward()  # DDP all-reduces (averages) the gradients here
        gradients = {name: parameter.grad for name, parameter in model.module.named_parameters()}
        torch.save(gradients, Path(out_dir) / f"gradients_rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def run_ddp_step(out_dir):
    context = mp.start_processes(
        ddp_worker, args=(train_digits.free_port(), str(out_dir)), nprocs=WORLD_SIZE, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + TIMEOUT_S
    while not context.join(timeout=1):  # raises if a worker failed
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"DDP workers did not finish within {TIMEOUT_S} s")
    return [torch.load(Path(out_dir) / f"gradients_rank{rank}.pt") for rank in range(WORLD_SIZE)]


def test_ddp_step_over_shards_equals_single_process_step_over_global_batch(tmp_path):
    torch.set_num_threads(1)
    single_process = gradients_of_one_step(fresh_model(), global_batch())
    per_rank = run_ddp_step(tmp_path)

    for rank_gradients in per_rank:
        assert rank_gradients.keys() == single_process.keys()
        for name, gradient in single_process.items():
            torch.testing.assert_close(rank_gradients[name], gradient, rtol=1e-4, atol=1e-6, msg=name)

    # The comparison can fail: one shard alone (no all-reduce) gives other gradients.
    first_shard_only = gradients_of_one_step(fresh_model(), global_batch().select(slice(0, GLOBAL_BATCH // WORLD_SIZE)))
    assert not all(
        torch.allclose(first_shard_only[name], gradient, rtol=1e-3, atol=1e-5)
        for name, gradient in single_process.items()
    )


@pytest.mark.skipif(
    not all(hasattr(ctc_ext, name) for name in ("greedy_decode", "beam_search")),
    reason="needs ctc_ext.greedy_decode and beam_search",
)
def test_example_script_trains_one_short_epoch_over_two_processes(capfd):
    pytest.importorskip("sklearn")
    pytest.importorskip("tqdm")
    train_digits.main(
        [
            "--ddp",
            "2",
            "--epochs",
            "1",
            "--lines-per-epoch",
            "64",
            "--batch-size",
            "16",
            "--held-out-lines",
            "16",
            "--beam-lines",
            "4",
            "--no-plots",
            "--no-progress",
        ]
    )
    output = capfd.readouterr().out
    assert "ddp x2 epoch  1" in output and "DDP x2: held-out label error rate" in output
