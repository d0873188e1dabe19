"""torchaudio's GPU aligner and decoder against ctc_ext's, where torchaudio has them (gpu_check.sh).

    python scripts/gpu_bench_torchaudio.py --json OUT.json [--repeat 7]

Rows, each a median over --repeat runs after a warm-up, the two sides alternating, on the GPU:
* forced_align: torchaudio.functional.forced_align (one sample per call: it takes batch 1) over
  a batch, against one batched ctc_ext.forced_align call; and whether the paths agree.
* beam decoding: torchaudio.models.decoder.cuda_ctc_decoder (beam 10, on the GPU) against
  ctc_ext.beam_search (beam 10, on the host after one copy) and ctc_ext.greedy_decode (GPU); and
  the share of samples whose best hypothesis agrees with ctc_ext.beam_search.
A part torchaudio lacks (not installed, built without it, or failing at run time) is written as
{"unavailable": why} and the script still succeeds: these rows are comparisons, not requirements
(ctc_ext's own results are proven by the test stage before this runs).
"""

import argparse
import json
import statistics
import sys
import time

import torch

import ctc_ext

ALIGN_SHAPES = [(500, 32, 29, 100), (300, 32, 1024, 60)]  # T, N, C, S
DECODE_SHAPES = [(500, 32, 29), (300, 32, 1024)]  # T, N, C
BEAM_WIDTH = 10


def median_ms(functions, repeat):
    """Median milliseconds of each thunk in `functions` (name -> thunk), run alternately."""
    for thunk in functions.values():
        thunk()
    torch.cuda.synchronize()
    samples = {name: [] for name in functions}
    for _ in range(repeat):
        for name, thunk in functions.items():
            torch.cuda.synchronize()
            start = time.perf_counter()
            thunk()
            torch.cuda.synchronize()
            samples[name].append(1e3 * (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in samples.items()}


def log_probs(T, N, C, seed):
    generator = torch.Generator().manual_seed(seed)
    return (3 * torch.randn(T, N, C, generator=generator)).log_softmax(-1).cuda()  # (T, N, C)


def align_rows(repeat):
    try:
        from torchaudio.functional import forced_align as torchaudio_forced_align
    except Exception as error:  # ImportError, or torchaudio's own load errors
        return {"unavailable": f"torchaudio.functional.forced_align: {error}"}
    rows = []
    for T, N, C, S in ALIGN_SHAPES:
        x = log_probs(T, N, C, seed=T + C)
        generator = torch.Generator().manual_seed(S)
        targets = torch.randint(1, C, (N, S), generator=generator, dtype=torch.int32).cuda()
        lengths = torch.full((N,), T, dtype=torch.int32).cuda()
        target_lengths = torch.full((N,), S, dtype=torch.int32).cuda()
        batch_first = x.transpose(0, 1).contiguous()  # (N, T, C), what torchaudio takes

        def theirs():
            return [
                torchaudio_forced_align(
                    batch_first[n : n + 1], targets[n : n + 1], lengths[n : n + 1], target_lengths[n : n + 1]
                )
                for n in range(N)
            ]

        def ours():
            return ctc_ext.forced_align(x, targets, lengths, target_lengths)

        try:
            times = median_ms({"torchaudio": theirs, "ctc_ext": ours}, repeat)
        except RuntimeError as error:  # torchaudio without its compiled ops, say; ctc_ext is tested elsewhere
            return {"unavailable": f"forced_align failed: {str(error).splitlines()[0]}"}
        their_paths = torch.cat([alignment for alignment, _ in theirs()])
        our_paths = ours()[0]
        rows.append(
            {
                "op": "forced_align",
                "T": T,
                "N": N,
                "C": C,
                "S": S,
                "torchaudio_ms": times["torchaudio"],
                "ctc_ext_ms": times["ctc_ext"],
                "speedup": times["torchaudio"] / times["ctc_ext"],
                "same_paths": bool(torch.equal(their_paths.long(), our_paths)),
            }
        )
    return rows


def decode_rows(repeat):
    try:
        from torchaudio.models.decoder import cuda_ctc_decoder
    except Exception as error:
        return {"unavailable": f"torchaudio.models.decoder.cuda_ctc_decoder: {error}"}
    rows = []
    for T, N, C in DECODE_SHAPES:
        tokens = ["<blk>"] + [f"t{c}" for c in range(1, C)]
        try:
            # blank_skip_threshold 1.0: no frame is skipped, the same search ctc_ext.beam_search runs.
            decoder = cuda_ctc_decoder(tokens, nbest=1, beam_size=BEAM_WIDTH, blank_skip_threshold=1.0)
        except Exception as error:
            return {"unavailable": f"cuda_ctc_decoder could not be made: {error}"}
        x = log_probs(T, N, C, seed=T * C)
        batch_first = x.transpose(0, 1).contiguous()
        lengths = torch.full((N,), T, dtype=torch.int32).cuda()

        def theirs():
            return decoder(batch_first, lengths)

        def ours_beam():
            return ctc_ext.beam_search(x, lengths, beam_width=BEAM_WIDTH)

        def ours_greedy():
            return ctc_ext.greedy_decode(x, lengths)

        try:
            times = median_ms({"torchaudio": theirs, "beam": ours_beam, "greedy": ours_greedy}, repeat)
        except RuntimeError as error:
            return {"unavailable": f"beam decoding failed: {str(error).splitlines()[0]}"}
        their_best = [list(hypotheses[0].tokens) for hypotheses in theirs()]
        our_best = [sample[0][0].tolist() for sample in ours_beam()]
        agree = sum(a == b for a, b in zip(their_best, our_best)) / N
        rows.append(
            {
                "op": "beam_decode",
                "T": T,
                "N": N,
                "C": C,
                "beam_width": BEAM_WIDTH,
                "torchaudio_cuda_beam_ms": times["torchaudio"],
                "ctc_ext_beam_search_host_ms": times["beam"],
                "ctc_ext_greedy_gpu_ms": times["greedy"],
                "best_hypothesis_agreement": agree,
            }
        )
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", required=True, metavar="PATH", help="where to write the rows")
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per side (default 7; medians)")
    options = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_bench_torchaudio: no CUDA device", file=sys.stderr)
        return 2
    try:
        import torchaudio

        version = torchaudio.__version__
    except Exception as error:
        version = f"not importable: {error}"
    result = {
        "torch": torch.__version__,
        "torchaudio": version,
        "gpu": torch.cuda.get_device_name(),
        "forced_align": align_rows(options.repeat),
        "beam_decode": decode_rows(options.repeat),
    }
    with open(options.json, "w") as out:
        json.dump(result, out, indent=1)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
