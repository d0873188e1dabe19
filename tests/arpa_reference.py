"""An independent back-off n-gram model for the LM tests: ARPA files read into Python dicts and
queried by the textbook recursion, plus a generator of random ARPA files.

    p(w | h) = p*(h w)                      if "h w" is listed
             = bow(h) * p(w | h without its first word)   otherwise (bow = 1 when h is not listed)

in log10, with the history cut to order - 1 words; a word the model lacks is <unk>.
"""

import math
import random
from typing import Dict, List, Optional, Sequence, Tuple

LN_10 = math.log(10.0)


class ReferenceArpa:
    def __init__(self, path):
        self.probs: Dict[Tuple[str, ...], float] = {}  # log10
        self.backoffs: Dict[Tuple[str, ...], float] = {}  # log10
        self.order = 0
        section = 0
        with open(path, encoding="utf-8") as stream:
            for line in stream:
                line = line.strip()
                if line.endswith("-grams:"):
                    section = int(line[1 : line.index("-")])
                    self.order = max(self.order, section)
                    continue
                if not line or line.startswith("\\") or line.startswith("ngram ") or section == 0:
                    continue
                fields = line.split()
                words = tuple(fields[1 : 1 + section])
                self.probs[words] = float(fields[0])
                if len(fields) == section + 2:
                    self.backoffs[words] = float(fields[-1])
        self.vocabulary = [ngram[0] for ngram in self.probs if len(ngram) == 1]
        if ("<unk>",) not in self.probs:
            self.probs[("<unk>",)] = -100.0  # KenLM's convention, as ctc_ext's model

    def word(self, word: str) -> str:
        return word if (word,) in self.probs else "<unk>"

    def log10_prob(self, word: str, history: Sequence[str]) -> float:
        word = self.word(word)
        history = (
            tuple(self.word(w) for w in history)[max(0, len(history) - self.order + 1) :] if self.order > 1 else ()
        )
        total = 0.0
        while True:
            if history + (word,) in self.probs:
                return total + self.probs[history + (word,)]
            total += self.backoffs.get(history, 0.0)
            history = history[1:]

    def ln_prob(self, word: str, history: Sequence[str]) -> float:
        return self.log10_prob(word, history) * LN_10

    def sentence_ln_prob(self, words: Sequence[str], bos: bool = True, eos: bool = True) -> float:
        history = ["<s>"] if bos else []
        total = 0.0
        for word in list(words) + (["</s>"] if eos else []):
            total += self.ln_prob(word, history)
            history.append(word)
        return total

    def longest_known_suffix(self, history: Sequence[str]) -> Tuple[str, ...]:
        """The longest suffix of the history (at most order - 1 words) that the file lists."""
        history = tuple(self.word(w) for w in history)
        for length in range(min(len(history), self.order - 1), 0, -1):
            if history[len(history) - length :] in self.probs:
                return history[len(history) - length :]
        return ()


def random_arpa(
    path,
    order: int,
    vocabulary_size: int,
    ngrams_per_order: int,
    seed: int,
    with_unknown: bool = True,
    drop_suffixes: bool = True,
) -> List[str]:
    """Writes an ARPA file with random (unnormalised) probabilities and back-off weights: every
    n-gram's context is listed, but with ``drop_suffixes`` some n-grams lack their suffix (as
    pruned models do), which a query must skip over.  Returns the vocabulary words."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(vocabulary_size)]
    unigrams = ["<s>", "</s>"] + words + (["<unk>"] if with_unknown else [])
    levels: List[List[Tuple[str, ...]]] = [[(w,) for w in unigrams]]
    for _ in range(2, order + 1):
        seen = set()
        contexts = levels[-1]
        for _ in range(ngrams_per_order * 3):
            if len(seen) >= ngrams_per_order:
                break
            context = rng.choice(contexts)
            if context[-1] == "</s>":
                continue
            ngram = context + (rng.choice(unigrams[1:]),)  # never <s> after a word
            if not drop_suffixes and ngram[1:] not in set(levels[-1]):
                continue
            seen.add(ngram)
        levels.append(sorted(seen))
    with open(path, "w", encoding="utf-8") as stream:
        stream.write("\\data\\\n")
        for n, level in enumerate(levels, start=1):
            stream.write(f"ngram {n}={len(level)}\n")
        for n, level in enumerate(levels, start=1):
            stream.write(f"\n\\{n}-grams:\n")
            shuffled = list(level)
            rng.shuffle(shuffled)  # sorted input must not be required
            for ngram in shuffled:
                log_prob = -99.0 if ngram == ("<s>",) else round(-rng.uniform(0.05, 3.0), 6)
                line = f"{log_prob}\t{' '.join(ngram)}"
                if n < order and rng.random() < 0.8:
                    line += f"\t{round(rng.uniform(-1.5, 0.5), 6)}"
                stream.write(line + "\n")
        stream.write("\n\\end\\\n")
    return words


def random_sentences(words: Sequence[str], count: int, seed: int, unknown: Optional[str] = "zzz") -> List[List[str]]:
    """Sentences of 0-12 words from ``words``, some with a word outside the vocabulary."""
    rng = random.Random(seed)
    pool = list(words) + ([unknown] if unknown else [])
    return [[rng.choice(pool) for _ in range(rng.randint(0, 12))] for _ in range(count)]
