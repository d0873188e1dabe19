"""CTCDecoder at twice pyctcdecode's beam, character vocabulary with the 2-gram LM of
`ctc-bench --decode-lm`: the speed ratio (min-max of alternating runs) and on how many
utterances our best text scores at least pyctcdecode's under our fused score.

    .venv/bin/python benchmarks/lm_decoder_double_beam.py   # needs pyctcdecode and kenlm
"""

import math
import tempfile
import time

import pyctcdecode
import torch

import ctc_ext
from ctc_ext.bench_decode import fused_score_of_text, synthetic_lm_task
from ctc_ext.lm import NgramLM


def main(N=16, T=200, lm_weight=0.5, word_score=1.0, unk_offset=-10.0, runs=2):
    torch.set_num_threads(1)
    unk_score = lm_weight * unk_offset * math.log(10)  # pyctcdecode's offset is log10, inside alpha
    weights = (lm_weight, word_score, unk_score)
    with tempfile.TemporaryDirectory() as workdir:
        tokens, logits, arpa, _ = synthetic_lm_task("characters", T, N, workdir)
        log_probs = logits.log_softmax(2)  # (T, N, C)
        per_sample = [log_probs[:, n].numpy() for n in range(N)]
        lm = NgramLM(arpa)
        labels = [""] + [" " if t == "|" else t for t in tokens[1:]]
        reference = pyctcdecode.build_ctcdecoder(
            labels, kenlm_model_path=arpa, alpha=lm_weight, beta=word_score, unk_score_offset=unk_offset
        )
        print("| ours / pyctcdecode beams | speed ratio (min-max) | fused score >= pyctcdecode's |")
        print("|---|---|---|")
        for beam_width in (10, 50, 100):
            ours = ctc_ext.CTCDecoder(
                tokens,
                lm=arpa,
                lm_weight=lm_weight,
                word_score=word_score,
                unk_score=unk_score,
                beam_width=2 * beam_width,
                num_threads=1,
            )
            ratios = []
            for _ in range(runs):
                start = time.perf_counter()
                best = ours(log_probs)
                our_time = time.perf_counter() - start
                start = time.perf_counter()
                texts = [" ".join(reference.decode(x, beam_width=beam_width).split()) for x in per_sample]
                ratios.append((time.perf_counter() - start) / our_time)
            at_least = sum(
                theirs == best[n][0].text
                or fused_score_of_text(best[n][0].text, log_probs[:, n], tokens, lm, weights)
                >= fused_score_of_text(theirs, log_probs[:, n], tokens, lm, weights)
                for n, theirs in enumerate(texts)
            )
            print(f"| {2 * beam_width} / {beam_width} | {min(ratios):.1f}-{max(ratios):.1f}x | {at_least}/{N} |")


if __name__ == "__main__":
    main()
