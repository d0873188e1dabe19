"""Decoding with a word language model: a weak digits reader, lines of digit "words", an n-gram LM.

The handwritten digits of examples/train_digits.py (scikit-learn's 8x8 images) are composed into
lines of *words*: digit strings such as ``307`` or ``5182``, a few columns apart within a word and
a wide gap between words. The reader has one more class than train_digits' model, ``|``, which
it learns to emit in the gaps between words. It is trained on lines of random digit strings and
stopped halfway through its learning-rate schedule (4 of 8 epochs), so it still misreads digits.

The held-out lines are sentences of a small "language": 16 words of 2-4 digits and a random word
bigram chain (each word is followed by one of three others). A text corpus of such sentences
becomes a trigram model with ``python -m ctc_ext.lm corpus.txt --order 3 -o lm.arpa`` (ctc_ext's
Kneser-Ney builder), and the held-out lines are decoded three ways: greedy, prefix beam search,
and prefix beam search fused with the language model. The script prints the label and word error
rates of each, and draws one line's alignment with the decoded words' frames.

    pip install .[examples]                    # scikit-learn, tqdm, matplotlib
    python examples/decode_with_lm.py          # about a minute on one CPU core

Writes ``corpus.txt``, ``lm.arpa`` and ``alignment_lm.png`` into ``--out-dir``.
"""

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

import ctc_ext
from ctc_ext.lm import NgramLM

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_digits  # noqa: E402  (the digit images, the model and the edit distance)

BLANK = 0
SEPARATOR = 11  # "|" between words
NUM_CLASSES = 12  # blank, digits 0-9 (class d + 1), separator
CLASS_NAMES = ["ε"] + [str(digit) for digit in range(10)] + ["|"]
DIGIT_SIZE = train_digits.DIGIT_SIZE


# ----------------------------------------------------------------------------------------- text


def make_vocabulary(rng: np.random.Generator, size: int) -> List[str]:
    """``size`` distinct words of 2 to 4 digits."""
    words = set()
    while len(words) < size:
        words.add("".join(str(d) for d in rng.integers(0, 10, size=rng.integers(2, 5))))
    return sorted(words)


def make_grammar(rng: np.random.Generator, vocabulary: Sequence[str], successors: int = 3) -> Dict[str, List[str]]:
    """A word bigram chain: each word is followed by one of ``successors`` others."""
    return {word: list(rng.choice(vocabulary, size=successors, replace=False)) for word in vocabulary}


def sample_sentences(
    rng: np.random.Generator, grammar: Dict[str, List[str]], count: int, min_words: int = 2, max_words: int = 4
) -> List[List[str]]:
    """``count`` sentences of the chain, each ``min_words`` to ``max_words`` words long."""
    vocabulary = sorted(grammar)
    sentences = []
    for _ in range(count):
        sentence = [vocabulary[rng.integers(len(vocabulary))]]
        for _ in range(rng.integers(min_words, max_words + 1) - 1):
            sentence.append(grammar[sentence[-1]][rng.integers(len(grammar[sentence[-1]]))])
        sentences.append(sentence)
    return sentences


def random_sentences(rng: np.random.Generator, count: int, min_words: int = 2, max_words: int = 4) -> List[List[str]]:
    """Lines of random digit strings (2-4 digits), what the reader is trained on."""
    return [
        [
            "".join(str(d) for d in rng.integers(0, 10, size=rng.integers(2, 5)))
            for _ in range(rng.integers(min_words, max_words + 1))
        ]
        for _ in range(count)
    ]


def labels_of(sentence: Sequence[str]) -> List[int]:
    """Classes of a sentence: digits d as d + 1, SEPARATOR between words."""
    labels = []
    for k, word in enumerate(sentence):
        if k > 0:
            labels.append(SEPARATOR)
        labels += [int(d) + 1 for d in word]
    return labels


def words_of(labels: Sequence[int]) -> List[str]:
    """The words a label sequence spells (empty words between adjacent separators dropped)."""
    text = "".join("|" if label == SEPARATOR else str(label - 1) for label in labels)
    return [word for word in text.split("|") if word]


# ---------------------------------------------------------------------------------------- lines


@dataclass
class WordLines:
    images: Tensor  # (N, 8, W) float32, zero right of each line's width
    widths: Tensor  # (N,) int64 columns used by each line
    targets: Tensor  # (N, S) int64 classes, padded with BLANK
    target_lengths: Tensor  # (N,) int64
    sentences: List[List[str]]

    def __len__(self):
        return len(self.sentences)

    def select(self, rows: slice) -> "WordLines":
        return WordLines(
            self.images[rows], self.widths[rows], self.targets[rows], self.target_lengths[rows], self.sentences[rows]
        )


def compose_word_lines(
    images: np.ndarray,
    digits: np.ndarray,
    pool: np.ndarray,
    sentences: Sequence[Sequence[str]],
    rng: np.random.Generator,
    max_digit_gap: int = 2,
    word_gap: Tuple[int, int] = (8, 12),
) -> WordLines:
    """Draws each sentence with digit images from ``pool`` (indices into ``images``): 0 to
    ``max_digit_gap`` blank columns between the digits of a word, ``word_gap`` (inclusive range)
    between words, 0-3 before the first and after the last digit."""
    by_digit = [pool[digits[pool] == d] for d in range(10)]
    placements = []  # per line: (image index, first column) of every digit
    widths = []
    for sentence in sentences:
        column = int(rng.integers(0, 4))
        placed = []
        for k, word in enumerate(sentence):
            for i, digit in enumerate(word):
                if i > 0:
                    column += int(rng.integers(0, max_digit_gap + 1))
                elif k > 0:
                    column += int(rng.integers(word_gap[0], word_gap[1] + 1))
                choices = by_digit[int(digit)]
                placed.append((int(choices[rng.integers(len(choices))]), column))
                column += DIGIT_SIZE
        placements.append(placed)
        widths.append(column + int(rng.integers(0, 4)))
    width = max(widths)
    lines = np.zeros((len(sentences), DIGIT_SIZE, width), dtype=np.float32)
    for n, placed in enumerate(placements):
        for image_index, column in placed:
            lines[n, :, column : column + DIGIT_SIZE] = images[image_index]
    label_lists = [labels_of(sentence) for sentence in sentences]
    targets = torch.zeros(len(sentences), max(len(labels) for labels in label_lists), dtype=torch.int64)
    for n, labels in enumerate(label_lists):
        targets[n, : len(labels)] = torch.tensor(labels)
    return WordLines(
        torch.from_numpy(lines),
        torch.tensor(widths, dtype=torch.int64),
        targets,
        torch.tensor([len(labels) for labels in label_lists], dtype=torch.int64),
        [list(sentence) for sentence in sentences],
    )


# ---------------------------------------------------------------------------------------- model


def word_reader() -> nn.Module:
    """train_digits' conv + BiLSTM reader with a separator class: (N, 8, W) -> (T, N, 12)."""
    model = train_digits.LineReader()
    model.classifier = nn.Linear(model.classifier.in_features, NUM_CLASSES)
    return model


def train(args, images, digits, train_pool, validation: "WordLines") -> nn.Module:
    """Trains a fresh seeded reader on lines of random digit strings for ``args.epochs`` epochs of
    a one-cycle schedule planned for ``args.schedule_epochs`` (stopping early leaves a weak
    reader); prints the greedy label error rate on ``validation`` after every epoch."""
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed + 2)
    model = word_reader()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    steps = args.lines_per_epoch // args.batch_size
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, epochs=max(args.schedule_epochs, args.epochs), steps_per_epoch=steps, pct_start=0.1
    )
    criterion = ctc_ext.CTCLoss(blank=BLANK)
    for epoch in range(1, args.epochs + 1):
        total = 0.0
        for _ in range(steps):
            batch = compose_word_lines(images, digits, train_pool, random_sentences(rng, args.batch_size), rng)
            logits = model(batch.images)  # (T, N, C)
            loss = criterion(logits, batch.targets, frame_lengths(batch), batch.target_lengths)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            scheduler.step()
            total += loss.item()
        model.eval()
        with torch.no_grad():
            log_probs = model(validation.images)
        greedy = [
            labels.tolist() for labels in ctc_ext.greedy_decode(log_probs, frame_lengths(validation), blank=BLANK)
        ]
        model.train()
        print(
            f"epoch {epoch}: training loss {total / max(steps, 1):.4f}, "
            f"greedy label error rate {100 * error_rates(greedy, validation)[0]:.1f}% on random held-out lines"
        )
    return model.eval()


def frame_lengths(lines: WordLines) -> Tensor:
    return train_digits.LineReader.frame_lengths(lines.widths)


# ------------------------------------------------------------------------------------- decoding


TOKENS = ["-"] + [str(digit) for digit in range(10)] + ["|"]  # the decoder's text of each class


def decode(model: nn.Module, lines: WordLines, beam_width: int, decoder: ctc_ext.CTCDecoder):
    """(log-probabilities, greedy, beam and beam + LM label sequences, beam + LM words with frames)."""
    with torch.no_grad():
        log_probs = model(lines.images).log_softmax(2)  # (T, N, C)
    lengths = frame_lengths(lines)
    greedy = [labels.tolist() for labels in ctc_ext.greedy_decode(log_probs, lengths, blank=BLANK)]
    beam = [hypotheses[0][0].tolist() for hypotheses in ctc_ext.beam_search(log_probs, lengths, beam_width, BLANK)]
    best = [hypotheses[0] for hypotheses in decoder(log_probs, lengths)]
    fused = [list(hypothesis.tokens) for hypothesis in best]
    word_spans = [[(span.word, span.start, span.end) for span in hypothesis.words] for hypothesis in best]
    return log_probs, greedy, beam, fused, word_spans


def error_rates(hypotheses: Sequence[Sequence[int]], lines: WordLines) -> Tuple[float, float]:
    """(label error rate over digits and separators, word error rate)."""
    label_errors = word_errors = labels = words = 0
    for hypothesis, sentence in zip(hypotheses, lines.sentences):
        reference = labels_of(sentence)
        label_errors += train_digits.edit_distance(list(hypothesis), reference)
        word_errors += train_digits.edit_distance(words_of(hypothesis), sentence)
        labels += len(reference)
        words += len(sentence)
    return label_errors / max(labels, 1), word_errors / max(words, 1)


# ------------------------------------------------------------------------------------------ main


def build_language_model(args, grammar, out_dir: Path) -> NgramLM:
    """Writes a corpus of the chain's sentences and runs the builder's command line on it."""
    corpus = out_dir / "corpus.txt"
    sentences = sample_sentences(np.random.default_rng(args.seed + 5), grammar, args.corpus_sentences)
    corpus.write_text("".join(" ".join(sentence) + "\n" for sentence in sentences))
    arpa = out_dir / "lm.arpa"
    command = [sys.executable, "-m", "ctc_ext.lm", str(corpus), "--order", str(args.lm_order), "-o", str(arpa)]
    subprocess.run(command, check=True)
    return NgramLM(arpa)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=4, help="epochs trained (a weak reader: training stops early)")
    parser.add_argument("--schedule-epochs", type=int, default=8, help="epochs the learning-rate schedule plans for")
    parser.add_argument("--lines-per-epoch", type=int, default=1536)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--vocabulary", type=int, default=16, help="words of the language")
    parser.add_argument("--corpus-sentences", type=int, default=2000, help="LM training sentences")
    parser.add_argument("--lm-order", type=int, default=3)
    parser.add_argument("--lm-weight", type=float, default=1.0)
    parser.add_argument("--word-score", type=float, default=0.0)
    parser.add_argument("--unk-score", type=float, default=-10.0)
    parser.add_argument("--beam-width", type=int, default=16)
    parser.add_argument("--test-lines", type=int, default=200)
    parser.add_argument("--plot-line", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out-dir", default=str(Path(__file__).resolve().parent / "out"))
    parser.add_argument("--no-plots", action="store_true")
    return parser.parse_args(argv)


def main(argv=None) -> Dict[str, Tuple[float, float]]:
    args = parse_args(argv)
    try:
        import sklearn  # noqa: F401  (the data)
    except ImportError:
        sys.exit("scikit-learn is missing: pip install ctc_ext[examples]")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    images, digits = train_digits.load_digit_images()
    train_pool, held_out_pool = train_digits.split_images(len(images), 0.25, args.seed)
    validation_rng = np.random.default_rng(args.seed + 3)
    validation = compose_word_lines(
        images, digits, held_out_pool, random_sentences(validation_rng, 100), validation_rng
    )
    model = train(args, images, digits, train_pool, validation)

    text_rng = np.random.default_rng(args.seed + 4)
    grammar = make_grammar(text_rng, make_vocabulary(text_rng, args.vocabulary))
    lm = build_language_model(args, grammar, out_dir)
    test_sentences = sample_sentences(np.random.default_rng(args.seed + 6), grammar, args.test_lines)
    test = compose_word_lines(images, digits, held_out_pool, test_sentences, np.random.default_rng(args.seed + 7))

    # The NgramLM is queried in C++ by the decoder's scorer (no Python per word).
    decoder = ctc_ext.CTCDecoder(
        TOKENS,
        lm=lm,
        lm_weight=args.lm_weight,
        word_score=args.word_score,
        unk_score=args.unk_score,
        beam_width=args.beam_width,
        blank=BLANK,
        word_delimiter="|",
    )
    log_probs, greedy, beam, fused, word_spans = decode(model, test, args.beam_width, decoder)
    rows = {
        "greedy": error_rates(greedy, test),
        f"beam search (width {args.beam_width})": error_rates(beam, test),
        f"beam search + {args.lm_order}-gram LM": error_rates(fused, test),
    }
    print(
        f"\n{len(test)} held-out lines, {int(test.target_lengths.sum())} labels, {sum(map(len, test_sentences))} words"
    )
    print("| decoder | label error rate | word error rate |\n|---|---|---|")
    for name, (label_rate, word_rate) in rows.items():
        print(f"| {name} | {100 * label_rate:.2f}% | {100 * word_rate:.2f}% |")
    for n in range(min(3, len(test))):
        print(
            f"  line {n}: truth {' '.join(test.sentences[n]):<16} greedy {' '.join(words_of(greedy[n])):<16} "
            f"beam + LM {' '.join(words_of(fused[n]))}"
        )

    if not args.no_plots:
        n = args.plot_line
        length = int(frame_lengths(test)[n])
        words = word_spans[n]
        try:
            path = ctc_ext.plot_alignment(
                log_probs[:, n],
                fused[n] or [SEPARATOR],
                input_length=length,
                blank=BLANK,
                path=out_dir / "alignment_lm.png",
                labels=CLASS_NAMES,
                image=test.images[n, :, : 2 * length],
                word_spans=words,
                title=f"held-out line {n}: '{' '.join(test.sentences[n])}', read with the LM as "
                f"'{' '.join(w for w, _, _ in words)}'",
            )
            print(f"wrote {path}")
        except ImportError as error:
            print(f"no alignment picture: {error}")
    print(f"total wall time {time.perf_counter() - started:.1f} s")
    return rows


if __name__ == "__main__":
    main()
