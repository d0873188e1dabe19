"""Word n-gram language models for decoding: the C++ ARPA model, a KenLM adapter, an ARPA builder.

* :class:`NgramLM` loads an ARPA file of any order into ctc_ext's C++ back-off model
  (csrc/cpu/ngram_lm.cpp), the one the C++ decoder queries word by word.
* :class:`KenLM` puts the same Python interface on a ``kenlm.Model`` (ARPA or KenLM binary
  files; ``pip install kenlm``, optional).
* :func:`estimate_kneser_ney` / :func:`build_arpa` (ctc_ext/lm/kneser_ney.py) estimate an
  interpolated modified Kneser-Ney model from text and write it as ARPA (KenLM's ``lmplz`` is
  not pip-installable); the command line is ctc_ext/lm/__main__.py::

      python -m ctc_ext.lm corpus.txt --order 3 -o lm.arpa

Scores are natural logarithms (ARPA files hold log10).  docs/lm.md has the formulas and the
memory figures.
"""

import bisect
import math
from typing import Iterable, List, Optional, Sequence, Tuple, Union

from .. import _C
from ._words import SENTENCE_BEGIN, SENTENCE_END, UNKNOWN, PathLike, as_words, existing_file
from .kneser_ney import KneserNeyModel, build_arpa, estimate_kneser_ney

__all__ = ["NgramLM", "KenLM", "KneserNeyModel", "estimate_kneser_ney", "build_arpa"]

LN_10 = math.log(10.0)


class _SentenceScoring:
    """``sentence_score(words)`` from the per-word interface both models share."""

    def sentence_score(self, words: Union[str, Sequence[str]], bos: bool = True, eos: bool = True) -> float:
        """Natural-log probability of a word sequence (a string is split on whitespace).

        ``bos``: start after ``<s>`` (else from the empty context); ``eos``: add ``</s>`` at the
        end.  Words the model does not know are scored as ``<unk>``.
        """
        state = self.begin_state() if bos else self.null_state()
        total = 0.0
        for word in as_words(words):
            log_prob, state = self.score_word(state, word)
            total += log_prob
        if eos:
            total += self.end_score(state)
        return total


class NgramLM(_C.NgramLanguageModel, _SentenceScoring):
    """A back-off n-gram model read from an ARPA file, held in C++.

    ARPA files of any order with ``<s>``, ``</s>`` and optionally ``<unk>`` (when the file has
    none, ``<unk>`` is added with KenLM's log10 probability -100).  States are integers: the
    longest context the model knows, so two histories with equal states give every next word the
    same probability.  A malformed file raises ``ValueError`` naming the path and the line.

    Interface (shared with :class:`KenLM`): ``order``, ``begin_state()`` (after ``<s>``),
    ``null_state()`` (empty context), ``score_word(state, word) -> (log_prob, next_state)``
    (``word`` a string, or an index from ``word_index``; -1 is ``<unk>``), ``end_score(state)``
    (``</s>``), ``sentence_score(words, bos=True, eos=True)`` (also ``score``),
    ``word_index(word)`` (-1 when unknown),
    ``word in lm``, ``is_word_prefix(prefix)`` (whether a vocabulary word other than ``<s>``,
    ``</s>``, ``<unk>`` starts with it), ``vocabulary`` (by index), ``counts`` (n-grams per
    order as the file listed them).  The decoder takes the object itself (it is the C++ model).
    """

    def __init__(self, path: PathLike):
        self.path = existing_file(path, "ARPA file")
        super().__init__(self.path)

    def score_word(self, state: int, word: Union[str, int]) -> Tuple[float, int]:
        """(natural-log probability of ``word`` after ``state``, the state after it)."""
        if isinstance(word, str):
            word = self.word_index(word)
        return super().score_word(state, word)

    score = _SentenceScoring.sentence_score

    @property
    def counts(self) -> List[int]:
        return [self.num_ngrams(n) for n in range(1, self.order + 1)]

    def __contains__(self, word: str) -> bool:
        return self.word_index(word) >= 0

    def __repr__(self) -> str:
        return f"NgramLM('{self.path}', order={self.order}, counts={self.counts})"


def _arpa_unigrams(path: str) -> Optional[List[str]]:
    """The words of an ARPA file's \\1-grams: section, or None when the file is not ARPA text."""
    with open(path, "rb") as stream:
        if b"\\data\\" not in stream.read(4096):
            return None
    words = []
    with open(path, encoding="utf-8") as stream:
        in_unigrams = False
        for line in stream:
            line = line.strip()
            if line == "\\1-grams:":
                in_unigrams = True
            elif in_unigrams:
                if not line or line.startswith("\\"):
                    break
                fields = line.split()
                if len(fields) >= 2:
                    words.append(fields[1])
    return words


class KenLM(_SentenceScoring):
    """:class:`NgramLM`'s interface on a ``kenlm.Model`` (``pip install kenlm``): ARPA or KenLM
    binary files (``build_binary``), for decoding through the Python-LM scorer path.

    Besides ``begin_state``, ``null_state``, ``score_word``, ``end_score``, ``sentence_score``,
    ``is_word_prefix`` and ``vocabulary``, it has the decoder's Python language-model protocol:
    ``start() -> state``, ``score(state, word) -> (next_state, log_prob)`` and
    ``finish(state) -> log_prob`` (``</s>``), natural logs.

    ``unigrams``: the vocabulary, for ``is_word_prefix`` and ``vocabulary`` (KenLM's Python
    module does not list it).  Read from the file when it is ARPA; for a binary file pass the
    words (e.g. the unigrams of the ARPA it was built from), else ``is_word_prefix`` raises.
    States are ``kenlm.State`` objects (hashable, equal when KenLM's contexts are equal).
    """

    def __init__(self, path: PathLike, unigrams: Optional[Iterable[str]] = None):
        try:
            import kenlm
        except ImportError as error:
            raise ImportError("ctc_ext.lm.KenLM needs the kenlm package: pip install kenlm") from error
        self.path = existing_file(path, "KenLM file")
        self._kenlm = kenlm
        self.model = kenlm.Model(self.path)
        self.order = self.model.order
        words = list(unigrams) if unigrams is not None else _arpa_unigrams(self.path)
        self.vocabulary = words
        special = {SENTENCE_BEGIN, SENTENCE_END, UNKNOWN}
        self._sorted_words = None if words is None else sorted(w for w in set(words) if w not in special)

    def begin_state(self):
        state = self._kenlm.State()
        self.model.BeginSentenceWrite(state)
        return state

    def null_state(self):
        state = self._kenlm.State()
        self.model.NullContextWrite(state)
        return state

    def score_word(self, state, word: str):
        """(natural-log probability of ``word`` after ``state``, the state after it)."""
        if not isinstance(word, str):
            raise TypeError(f"KenLM.score_word takes the word as a string, got {word!r}")
        next_state = self._kenlm.State()
        return self.model.BaseScore(state, word, next_state) * LN_10, next_state

    def end_score(self, state) -> float:
        return self.model.BaseScore(state, SENTENCE_END, self._kenlm.State()) * LN_10

    # The decoder's Python language-model protocol.
    def start(self):
        return self.begin_state()

    def score(self, state, word: str):
        """(the state after ``word``, its natural-log probability after ``state``)."""
        log_prob, next_state = self.score_word(state, word)
        return next_state, log_prob

    def finish(self, state) -> float:
        return self.end_score(state)

    def __contains__(self, word: str) -> bool:
        return word in self.model

    def is_word_prefix(self, prefix: str) -> bool:
        if self._sorted_words is None:
            raise ValueError(
                f"'{self.path}' is a KenLM binary file: pass its words as KenLM(path, unigrams=...) for prefix checks"
            )
        i = bisect.bisect_left(self._sorted_words, prefix)
        return i < len(self._sorted_words) and self._sorted_words[i].startswith(prefix)

    def __repr__(self) -> str:
        return f"KenLM('{self.path}', order={self.order})"
