"""An interpolated modified Kneser-Ney estimator that writes ARPA files (docs/lm.md: formulas)."""

import math
import os
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, TextIO, Tuple, Union

from ._words import SENTENCE_BEGIN, SENTENCE_END, UNKNOWN, PathLike, as_words, existing_file

# lmplz's --discount_fallback values, used for an order whose counts of counts give no valid
# discounts (small corpora).
DISCOUNT_FALLBACK = (0.5, 1.0, 1.5)


@dataclass
class KneserNeyModel:
    """An estimated model: per order n (index n - 1), n-gram (tuple of words) ->
    (log10 probability, log10 back-off weight or None when the n-gram is never a context)."""

    order: int
    ngrams: List[Dict[Tuple[str, ...], Tuple[float, Optional[float]]]]
    discounts: List[Tuple[float, float, float]]  # D1, D2, D3+ per order
    fallback_orders: List[int] = field(default_factory=list)  # orders that used DISCOUNT_FALLBACK

    def write_arpa(self, stream: TextIO) -> None:
        stream.write("\\data\\\n")
        for n, table in enumerate(self.ngrams, start=1):
            stream.write(f"ngram {n}={len(table)}\n")
        for n, table in enumerate(self.ngrams, start=1):
            stream.write(f"\n\\{n}-grams:\n")
            for words, (log_prob, log_backoff) in table.items():
                line = f"{log_prob:.8g}\t{' '.join(words)}"
                if log_backoff is not None:
                    line += f"\t{log_backoff:.8g}"
                stream.write(line + "\n")
        stream.write("\n\\end\\\n")


def _discounts(adjusted: Iterable[int]) -> Optional[Tuple[float, float, float]]:
    """Chen and Goodman's estimates D_k = k - (k + 1) Y t_{k+1} / t_k, Y = t_1 / (t_1 + 2 t_2),
    from the counts of counts t_k; None when they are undefined or outside (0, k]."""
    t = Counter(a for a in adjusted if a <= 4)
    if any(t[k] == 0 for k in (1, 2, 3, 4)):
        return None
    y = t[1] / (t[1] + 2 * t[2])
    discounts = tuple(k - (k + 1) * y * t[k + 1] / t[k] for k in (1, 2, 3))
    if any(not 0 < d <= k for k, d in zip((1, 2, 3), discounts)):
        return None
    return discounts


def estimate_kneser_ney(sentences: Iterable[Union[str, Sequence[str]]], order: int = 3) -> KneserNeyModel:
    """Interpolated modified Kneser-Ney (Chen and Goodman 1998, as KenLM's lmplz), no pruning.

    ``sentences``: one sentence per item, a string (split on whitespace) or a sequence of words;
    blank ones are skipped.  Every sentence is scored as ``<s> words </s>``.  The vocabulary is
    the corpus' words plus ``<s>``, ``</s>`` and ``<unk>``; ``<unk>`` gets the unigram mass left
    for unseen words.  docs/lm.md gives the formulas.
    """
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise ValueError(f"order must be a positive int, got {order!r}")
    # Raw counts of every n-gram of every order, on word ids; <s> = 0 only ever comes first.
    ids = {SENTENCE_BEGIN: 0, SENTENCE_END: 1, UNKNOWN: 2}
    raw = [Counter() for _ in range(order + 1)]
    num_sentences = 0
    for number, sentence in enumerate(sentences, start=1):
        words = as_words(sentence)
        if not words:
            continue
        for word in words:
            if word in (SENTENCE_BEGIN, SENTENCE_END):
                raise ValueError(f"sentence {number} contains {word}: the builder adds sentence boundaries itself")
        padded = [0] + [ids.setdefault(word, len(ids)) for word in words] + [1]
        for n in range(1, order + 1):
            raw[n].update(zip(*(padded[k:] for k in range(n))))
        num_sentences += 1
    if num_sentences == 0:
        raise ValueError("the corpus has no words")
    words_of = list(ids)

    # Adjusted counts: raw at the highest order and for n-grams that start with <s> (they have no
    # left context); otherwise the number of distinct words seen before the n-gram.
    adjusted = [None] * (order + 1)
    adjusted[order] = raw[order]
    for n in range(order - 1, 0, -1):
        continuation = Counter(ngram[1:] for ngram in raw[n + 1])
        for ngram, count in raw[n].items():
            if ngram[0] == 0:
                continuation[ngram] = count
        adjusted[n] = continuation
    del adjusted[1][(0,)]  # <s> is never predicted
    vocabulary_size = len(ids) - 1  # what the unigram level predicts: every word but <s>

    discounts, fallback_orders = [], []
    probabilities: List[Dict[tuple, float]] = [{}]  # per order: n-gram -> interpolated probability
    backoffs: List[Dict[tuple, float]] = [{}]  # per order: context -> interpolation weight
    for n in range(1, order + 1):
        d = _discounts(adjusted[n].values())
        if d is None:
            d = DISCOUNT_FALLBACK
            fallback_orders.append(n)
        discounts.append(d)
        discount = (0.0,) + d  # by min(count, 3)
        totals, discounted = defaultdict(float), defaultdict(float)
        for ngram, count in adjusted[n].items():
            totals[ngram[:-1]] += count
            discounted[ngram[:-1]] += discount[min(count, 3)]
        weight = {context: discounted[context] / totals[context] for context in totals}
        backoffs.append(weight)
        level = {}
        if n == 1:
            uniform = weight[()] / vocabulary_size
            level = {(word,): uniform for word in range(1, len(ids))}  # unseen words (<unk>)
            for ngram, count in adjusted[1].items():
                level[ngram] = (count - discount[min(count, 3)]) / totals[()] + uniform
        else:
            lower = probabilities[n - 1]
            for ngram, count in adjusted[n].items():
                context = ngram[:-1]
                level[ngram] = (count - discount[min(count, 3)]) / totals[context] + weight[context] * lower[ngram[1:]]
        probabilities.append(level)

    ngrams = []
    for n in range(1, order + 1):
        weights = backoffs[n + 1] if n < order else {}
        table = {}
        if n == 1:
            table[(SENTENCE_BEGIN,)] = (-99.0, math.log10(weights[(0,)]) if (0,) in weights else None)
        for ngram in sorted(probabilities[n]):
            weight = weights.get(ngram)
            table[tuple(words_of[i] for i in ngram)] = (
                math.log10(probabilities[n][ngram]),
                None if weight is None else math.log10(weight),
            )
        ngrams.append(table)
    return KneserNeyModel(order, ngrams, discounts, fallback_orders)


def build_arpa(corpus: PathLike, output: PathLike, order: int = 3) -> KneserNeyModel:
    """Estimates :func:`estimate_kneser_ney` on a text file (one sentence per line, UTF-8;
    ``-`` reads standard input) and writes the model to ``output`` as ARPA."""
    if os.fspath(corpus) == "-":
        model = estimate_kneser_ney(sys.stdin, order)
    else:
        with open(existing_file(corpus, "corpus"), encoding="utf-8") as stream:
            model = estimate_kneser_ney(stream, order)
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    with open(output, "w", encoding="utf-8") as stream:
        model.write_arpa(stream)
    return model
