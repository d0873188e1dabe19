"""Handwritten digit lines read by a conv + BiLSTM model trained with ctc_ext.CTCLoss.

The data is real handwriting that ships with scikit-learn (1,797 8x8 digit images,
``sklearn.datasets.load_digits``), nothing to download. The images are split into a training
pool and a held-out pool first; lines of 3 to 10 digits with random gaps are then composed from
each pool, fresh training lines every epoch, so held-out lines contain only unseen handwriting.
The model reads the image columns as frames; greedy decoding and prefix beam search turn its
outputs back into digit strings, scored by label error rate (edit distance / target length).

    pip install .[examples]                       # scikit-learn, tqdm, matplotlib
    python examples/train_digits.py               # well under a minute on one CPU core
    python examples/train_digits.py --compare-builtin   # same seed with torch's built-in loss
    python examples/train_digits.py --ddp 2       # DistributedDataParallel over 2 processes

Writes ``training_curves.png`` and ``alignment.png`` (one held-out line: occupancy lattice,
forced alignment and per-frame argmax) into ``--out-dir``.
"""

import argparse
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

import ctc_ext

BLANK = 0
NUM_CLASSES = 11  # blank + digits 0-9; digit d is class d + 1
DIGIT_SIZE = 8  # load_digits images are 8x8
CLASS_NAMES = ["ε"] + [str(digit) for digit in range(10)]


# ----------------------------------------------------------------------------------------- data


def load_digit_images():
    """(images (1797, 8, 8) float32 in [0, 1], digits (1797,) int64) from scikit-learn."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images / 16.0).astype(np.float32), digits.target.astype(np.int64)


def split_images(num_images: int, held_out_fraction: float, seed: int):
    """Disjoint (train_indices, held_out_indices) into the image array, a seeded permutation."""
    permutation = np.random.default_rng(seed).permutation(num_images)
    num_held_out = int(round(num_images * held_out_fraction))
    return np.sort(permutation[num_held_out:]), np.sort(permutation[:num_held_out])


def line_width(max_digits: int, max_gap: int) -> int:
    """Width in columns of every composed line: room for max_digits digits and every gap."""
    return max_digits * DIGIT_SIZE + (max_digits + 1) * max_gap


@dataclass
class Lines:
    """A batch of composed digit lines."""

    images: Tensor  # (N, 8, W) float32, zero (background) right of each line's width
    widths: Tensor  # (N,) int64, columns used by each line (last digit + trailing gap)
    targets: Tensor  # (N, max_digits) int64 classes (digit + 1), padded with BLANK
    target_lengths: Tensor  # (N,) int64, digits per line
    image_indices: Tensor  # (N, max_digits) int64 index of each digit's source image, -1 as padding
    digit_starts: Tensor  # (N, max_digits) int64 first column of each digit (padding slots: junk)

    def __len__(self):
        return self.images.shape[0]

    def select(self, rows) -> "Lines":
        return Lines(
            self.images[rows],
            self.widths[rows],
            self.targets[rows],
            self.target_lengths[rows],
            self.image_indices[rows],
            self.digit_starts[rows],
        )


def compose_lines(
    images: np.ndarray,
    digits: np.ndarray,
    pool: np.ndarray,
    num_lines: int,
    rng: np.random.Generator,
    min_digits: int = 3,
    max_digits: int = 10,
    max_gap: int = 3,
) -> Lines:
    """Compose ``num_lines`` lines of ``min_digits..max_digits`` digits drawn from ``pool``.

    Args:
        images: (M, 8, 8) float32 digit images; digits: (M,) int64 their values.
        pool: (P,) indices into ``images`` the lines may use (the train or the held-out split).
        rng: the source of every random choice (digit count, images, gaps), for reproducibility.

    Every gap (before, between and after the digits) is 0 to ``max_gap`` blank columns. Built
    with one scatter, no Python loop over lines.
    """
    digit_counts = rng.integers(min_digits, max_digits + 1, size=num_lines)
    slot_used = np.arange(max_digits)[None, :] < digit_counts[:, None]  # (N, max_digits)
    image_indices = np.where(slot_used, pool[rng.integers(0, len(pool), size=(num_lines, max_digits))], -1)
    gaps = rng.integers(0, max_gap + 1, size=(num_lines, max_digits + 1))
    # Column where digit k starts: the leading gap, the digits before it and the gaps after them.
    starts = np.cumsum(gaps[:, :max_digits], axis=1) + DIGIT_SIZE * np.arange(max_digits)[None, :]
    last_digit = digit_counts - 1
    widths = starts[np.arange(num_lines), last_digit] + DIGIT_SIZE + gaps[np.arange(num_lines), digit_counts]

    width = line_width(max_digits, max_gap)
    lines = np.zeros((num_lines, DIGIT_SIZE, width), dtype=np.float32)
    line_of_slot, slot = np.nonzero(slot_used)  # one entry per placed digit
    columns = starts[line_of_slot, slot][:, None] + np.arange(DIGIT_SIZE)[None, :]  # (D, 8)
    # lines[line, row, column] for every placed digit at once: index arrays broadcast to (D, 8, 8).
    lines[line_of_slot[:, None, None], np.arange(DIGIT_SIZE)[None, :, None], columns[:, None, :]] = images[
        image_indices[line_of_slot, slot]
    ]

    targets = np.where(slot_used, digits[np.maximum(image_indices, 0)] + 1, BLANK)
    return Lines(
        torch.from_numpy(lines),
        torch.from_numpy(widths.astype(np.int64)),
        torch.from_numpy(targets.astype(np.int64)),
        torch.from_numpy(digit_counts.astype(np.int64)),
        torch.from_numpy(image_indices.astype(np.int64)),
        torch.from_numpy(starts.astype(np.int64)),
    )


# ---------------------------------------------------------------------------------------- model


class LineReader(nn.Module):
    """Two convolutions with pooling, and a BiLSTM reading the image columns as frames.

    ``forward(images (N, 8, W)) -> logits (T, N, NUM_CLASSES)`` with ``T = ceil(W / 2)`` (four
    frames per digit); frames past ``frame_lengths(widths)`` see only background. No batch norm
    and no dropout, so one step over a batch gives the same gradients whether or not the batch
    is split over processes.
    """

    def __init__(self, channels: int = 32, hidden_size: int = 64):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, channels // 2, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2, ceil_mode=True),  # (8, W) -> (4, ceil(W / 2))
            nn.Conv2d(channels // 2, channels, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d((2, 1)),  # height 4 -> 2, frames unchanged
        )
        # Normalised frames get the LSTM past CTC's all-blank plateau in a third of the steps.
        self.frame_norm = nn.LayerNorm(channels * 2)
        self.rnn = nn.LSTM(channels * 2, hidden_size, bidirectional=True, batch_first=True)
        self.classifier = nn.Linear(2 * hidden_size, NUM_CLASSES)

    def forward(self, images: Tensor) -> Tensor:
        features = self.features(images.unsqueeze(1))  # (N, channels, 2, T)
        frames = features.flatten(1, 2).transpose(1, 2)  # (N, T, channels * 2)
        hidden, _ = self.rnn(self.frame_norm(frames))
        return self.classifier(hidden).transpose(0, 1)  # (T, N, C)

    @staticmethod
    def frame_lengths(widths: Tensor) -> Tensor:
        """(N,) frames covering each line's width (the first pooling rounds up)."""
        return (widths + 1) // 2


LossFunction = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]


def ctc_ext_loss() -> LossFunction:
    """ctc_ext takes raw logits: the log-softmax is fused into its kernel."""
    return ctc_ext.CTCLoss(blank=BLANK, reduction="mean")


def builtin_loss() -> LossFunction:
    """torch's built-in loss needs log-probabilities (its gradient is only right after log_softmax)."""

    def loss(logits, targets, input_lengths, target_lengths):
        return F.ctc_loss(logits.log_softmax(2), targets, input_lengths, target_lengths, blank=BLANK, reduction="mean")

    return loss


def training_loss(model: nn.Module, lines: Lines, loss_function: LossFunction, device: torch.device) -> Tensor:
    """Mean over the lines of each line's loss divided by its digit count (reduction='mean').

    Under DistributedDataParallel each process calls this on an equal shard of the global batch:
    DDP averages the gradients over processes, so the result equals one step on the whole batch.
    """
    logits = model(lines.images.to(device))
    return loss_function(
        logits,
        lines.targets.to(device),
        LineReader.frame_lengths(lines.widths).to(device),
        lines.target_lengths.to(device),
    )


# ------------------------------------------------------------------------------------- decoding


def edit_distance(hypothesis: Sequence[int], reference: Sequence[int]) -> int:
    """Levenshtein distance: fewest insertions, deletions and substitutions between the two."""
    previous_row = list(range(len(reference) + 1))
    for i, hypothesis_label in enumerate(hypothesis, start=1):
        row = [i] + [0] * len(reference)
        for j, reference_label in enumerate(reference, start=1):
            row[j] = min(
                previous_row[j] + 1, row[j - 1] + 1, previous_row[j - 1] + (hypothesis_label != reference_label)
            )
        previous_row = row
    return previous_row[-1]


def label_error_rate(hypotheses: Sequence[Sequence[int]], lines: Lines) -> float:
    """Total edit distance over total reference length."""
    errors = sum(
        edit_distance(list(hypothesis), lines.targets[n, : lines.target_lengths[n]].tolist())
        for n, hypothesis in enumerate(hypotheses)
    )
    return errors / max(int(lines.target_lengths.sum()), 1)


@torch.no_grad()
def evaluate(model: nn.Module, lines: Lines, device: torch.device, beam_width: int = 0, batch_size: int = 256):
    """(label error rate, hypotheses) on ``lines``: greedy decoding, or prefix beam search when
    ``beam_width > 0``."""
    model.eval()
    hypotheses: List[List[int]] = []
    for begin in range(0, len(lines), batch_size):
        batch = lines.select(slice(begin, begin + batch_size))
        log_probs = model(batch.images.to(device)).log_softmax(2)
        frame_lengths = LineReader.frame_lengths(batch.widths).to(device)
        if beam_width > 0:
            best = ctc_ext.beam_search(log_probs, frame_lengths, beam_width=beam_width, blank=BLANK, top_k=1)
            hypotheses += [candidates[0][0].tolist() for candidates in best]
        else:
            hypotheses += [labels.tolist() for labels in ctc_ext.greedy_decode(log_probs, frame_lengths, blank=BLANK)]
    model.train()
    return label_error_rate(hypotheses, lines), hypotheses


# ------------------------------------------------------------------------------------- training


@dataclass
class History:
    loss: List[float]
    label_error_rate: List[float]
    seconds: List[float]  # wall time at the end of each epoch since training started, evaluation included
    training_seconds: List[float]  # the same without the per-epoch evaluation: the training steps alone


def train(args, loss_function: LossFunction, name: str, device: torch.device, rank: int = 0, world_size: int = 1):
    """Trains a fresh, seeded model; every process of a DDP run calls this with its rank.

    Every process composes the same global batches (same seed) and trains on its own
    contiguous shard; rank 0 evaluates and prints a line per epoch.

    Returns ``(history, model, held_out_lines)``; the history is empty on ranks other than 0.
    """
    from tqdm import tqdm

    images, digits = load_digit_images()
    train_pool, held_out_pool = split_images(len(images), args.held_out_fraction, args.seed)
    held_out = compose_lines(images, digits, held_out_pool, args.held_out_lines, np.random.default_rng(args.seed + 1))
    line_rng = np.random.default_rng(args.seed + 2)

    torch.manual_seed(args.seed)
    model = LineReader().to(device)
    stepped_model = model  # what the training steps call: the DDP wrapper when distributed
    if world_size > 1:
        stepped_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    optimizer = torch.optim.Adam(stepped_model.parameters(), lr=args.lr)
    steps_per_epoch = args.lines_per_epoch // args.batch_size
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, epochs=args.epochs, steps_per_epoch=steps_per_epoch, pct_start=0.1
    )
    shard_size = args.batch_size // world_size
    shard = slice(rank * shard_size, (rank + 1) * shard_size)

    history = History([], [], [], [])
    started = time.perf_counter()
    evaluation_seconds = 0.0
    for epoch in range(1, args.epochs + 1):
        epoch_lines = compose_lines(images, digits, train_pool, steps_per_epoch * args.batch_size, line_rng)
        loss_sum = torch.zeros(2, dtype=torch.float64)  # (sum of batch losses, batches)
        progress = tqdm(
            range(steps_per_epoch),
            desc=f"{name} epoch {epoch}/{args.epochs}",
            leave=False,
            disable=rank != 0 or args.no_progress,
            dynamic_ncols=True,
        )
        for step in progress:
            batch = epoch_lines.select(slice(step * args.batch_size, (step + 1) * args.batch_size)).select(shard)
            loss = training_loss(stepped_model, batch, loss_function, device)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(stepped_model.parameters(), 5.0)
            optimizer.step()
            scheduler.step()
            loss_sum += torch.tensor([loss.item(), 1.0], dtype=torch.float64)
            if step % 10 == 0:
                progress.set_postfix(loss=f"{loss.item():.3f}")
        if world_size > 1:
            dist.all_reduce(loss_sum)
        if rank == 0:
            evaluation_started = time.perf_counter()
            error_rate, _ = evaluate(model, held_out, device)
            evaluation_seconds += time.perf_counter() - evaluation_started
            history.loss.append(float(loss_sum[0] / loss_sum[1]))
            history.label_error_rate.append(error_rate)
            history.seconds.append(time.perf_counter() - started)
            history.training_seconds.append(history.seconds[-1] - evaluation_seconds)
            tqdm.write(
                f"{name:>8} epoch {epoch:2d}  loss {history.loss[-1]:.4f}  held-out LER (greedy) "
                f"{100 * error_rate:5.2f}%  {history.seconds[-1]:6.1f} s"
            )
    return history, model, held_out


def report_final(
    args, model: nn.Module, held_out: Lines, device: torch.device, name: str, alignment_path: Optional[Path]
) -> None:
    """Greedy and beam-search error rates on the held-out lines, a few readings, and the
    alignment picture of one line when ``alignment_path`` is given."""
    greedy_error_rate, greedy_hypotheses = evaluate(model, held_out, device)
    summary = f"{name}: held-out label error rate {100 * greedy_error_rate:.2f}% greedy ({len(held_out)} lines)"
    if args.beam_lines > 0:
        beam_lines = held_out.select(slice(0, args.beam_lines))
        beam_error_rate, _ = evaluate(model, beam_lines, device, beam_width=args.beam_width)
        summary += f", {100 * beam_error_rate:.2f}% beam search width {args.beam_width} (first {len(beam_lines)} lines)"
    print(summary)
    for n in range(min(3, len(held_out))):
        truth = "".join(CLASS_NAMES[c] for c in held_out.targets[n, : held_out.target_lengths[n]].tolist())
        read = "".join(CLASS_NAMES[c] for c in greedy_hypotheses[n])
        print(f"  line {n}: truth {truth:<10}  read {read}")
    if alignment_path is None:
        return
    sample = held_out.select(slice(args.plot_line, args.plot_line + 1))
    with torch.no_grad():
        logits = model.eval()(sample.images.to(device))[:, 0].cpu()  # (T, C)
    frames = int(LineReader.frame_lengths(sample.widths)[0])
    try:
        path = ctc_ext.plot_alignment(
            logits.log_softmax(-1),
            sample.targets[0, : sample.target_lengths[0]],
            input_length=frames,
            blank=BLANK,
            path=alignment_path,
            labels=CLASS_NAMES,
            image=sample.images[0, :, : 2 * frames],
            title=f"held-out line {args.plot_line} after training ({name})",
        )
        print(f"wrote {path}")
    except ImportError as error:
        print(f"no alignment picture: {error}")


def plot_curves(histories: Dict[str, History], path: Path) -> Optional[Path]:
    """Training loss and held-out error rate per epoch, one line per loss implementation."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        print("no training curves: matplotlib is missing (pip install ctc_ext[examples])")
        return None
    figure = Figure(figsize=(9, 3.4), layout="constrained")
    loss_axes, error_axes = figure.subplots(1, 2)
    for name, history in histories.items():
        epochs = range(1, len(history.loss) + 1)
        label = f"{name} ({history.training_seconds[-1]:.0f} s of training)"
        loss_axes.plot(epochs, history.loss, marker="o", label=label)
        error_axes.plot(epochs, [100 * rate for rate in history.label_error_rate], marker="o", label=label)
    loss_axes.set(xlabel="epoch", ylabel="training loss (per digit)", yscale="log", title="CTC loss")
    error_axes.set(
        xlabel="epoch", ylabel="label error rate (%)", yscale="log", title="held-out label error rate (greedy)"
    )
    # A fixed reference level, so that curves of runs with other seeds or options compare at a glance.
    error_axes.axhline(5.0, color="grey", linestyle=":", linewidth=1, label="5% label error (reference)")
    for axes in (loss_axes, error_axes):
        axes.grid(alpha=0.3)
        axes.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path


# ---------------------------------------------------------------------------------- distributed


def free_port() -> int:
    """A TCP port nobody listens on right now, on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def init_process_group(rank: int, world_size: int, port: int, backend: str) -> None:
    """Joins a process group on localhost (no torchrun): gloo on CPU, NCCL on GPUs."""
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    if backend == "gloo" and sys.platform.startswith("linux"):
        # Loopback only: in containers the host name can resolve to an address gloo cannot reach.
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group(backend, rank=rank, world_size=world_size)


def _ddp_worker(rank: int, world_size: int, port: int, args) -> None:
    use_cuda = args.device == "cuda"
    device = torch.device("cuda", rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    torch.set_num_threads(max(1, args.threads // world_size))
    init_process_group(rank, world_size, port, "nccl" if use_cuda else "gloo")
    try:
        history, model, held_out = train(args, ctc_ext_loss(), f"ddp x{world_size}", device, rank, world_size)
        if rank == 0:
            report_final(
                args,
                model,
                held_out,
                device,
                f"ctc_ext, DDP x{world_size}",
                None if args.no_plots else Path(args.out_dir) / "alignment_ddp.png",
            )
            if not args.no_plots:
                path = plot_curves(
                    {f"ctc_ext, DDP x{world_size}": history}, Path(args.out_dir) / "training_curves_ddp.png"
                )
                if path:
                    print(f"wrote {path}")
    finally:
        dist.destroy_process_group()


# ------------------------------------------------------------------------------------------ main


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lines-per-epoch", type=int, default=1536)
    parser.add_argument("--batch-size", type=int, default=32, help="global batch size (split over --ddp processes)")
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--held-out-fraction", type=float, default=0.25, help="share of the 1,797 images held out")
    parser.add_argument("--held-out-lines", type=int, default=400)
    parser.add_argument("--beam-width", type=int, default=8)
    parser.add_argument("--beam-lines", type=int, default=100, help="held-out lines decoded with beam search")
    parser.add_argument("--plot-line", type=int, default=0, help="held-out line drawn in alignment.png")
    parser.add_argument("--seed", type=int, default=0)
    # One thread: this model's operations are too small to gain from a second one, and on a
    # 2-core machine shared with other work a second OpenMP thread slowed training 10-25 times.
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (with --ddp: divided over the processes, at least 1 each)",
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--compare-builtin",
        action="store_true",
        help="train again from the same seed with torch.nn.functional.ctc_loss and compare",
    )
    parser.add_argument(
        "--ddp",
        type=int,
        default=0,
        metavar="PROCESSES",
        help="train with DistributedDataParallel over this many local processes",
    )
    parser.add_argument("--out-dir", default=str(Path(__file__).resolve().parent / "out"))
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (per-epoch lines only)")
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args(argv)
    if args.ddp > 1 and args.batch_size % args.ddp:
        parser.error(f"--batch-size {args.batch_size} must split evenly over --ddp {args.ddp} processes")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        import sklearn  # noqa: F401  (the data)
        import tqdm  # noqa: F401  (the progress bar)
    except ImportError as error:
        sys.exit(f"{error.name} is missing: pip install ctc_ext[examples] (scikit-learn, tqdm, matplotlib)")
    started = time.perf_counter()
    if args.ddp > 1:
        if args.device == "cuda" and torch.cuda.device_count() < args.ddp:
            sys.exit(f"--ddp {args.ddp} on cuda needs {args.ddp} GPUs, found {torch.cuda.device_count()}")
        torch.multiprocessing.spawn(_ddp_worker, args=(args.ddp, free_port(), args), nprocs=args.ddp)
        print(f"total wall time {time.perf_counter() - started:.1f} s")
        return

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    history, model, held_out = train(args, ctc_ext_loss(), "ctc_ext", device)
    report_final(
        args, model, held_out, device, "ctc_ext", None if args.no_plots else Path(args.out_dir) / "alignment.png"
    )
    histories = {"ctc_ext": history}
    if args.compare_builtin:
        histories["built-in"], builtin_model, _ = train(args, builtin_loss(), "built-in", device)
        report_final(args, builtin_model, held_out, device, "built-in", None)
        for name, history in histories.items():
            print(
                f"{name:>8}: {history.training_seconds[-1]:.1f} s of training steps "
                f"({history.seconds[-1]:.1f} s with evaluation), final held-out LER "
                f"{100 * history.label_error_rate[-1]:.2f}%"
            )
    if not args.no_plots:
        path = plot_curves(histories, Path(args.out_dir) / "training_curves.png")
        if path:
            print(f"wrote {path}")
    print(f"total wall time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
