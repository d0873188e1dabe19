"""CTC decoding with a language model, a lexicon and hotwords: :class:`CTCDecoder`.

The search is the C++ prefix beam search of csrc/cpu/prefix_search.cpp (the one behind
:func:`ctc_ext.beam_search`); the language model, lexicon and hotwords are scorers of
csrc/cpu/decoder_scorers.cpp.  This module resolves the vocabulary's word conventions, checks
the arguments and turns the results into :class:`Hypothesis` objects.  See docs/decoding.md.
"""

import math
import os
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from . import _C
from .decode import _MAX_BEAM_WIDTH as MAX_BEAM_WIDTH
from .decode import _check_positive_int, _input_lengths_or_full, _time_major
from .functional import Lengths, _check_blank

__all__ = ["CTCDecoder", "CTCDecoderStream", "Hypothesis", "WordSpan", "WORD_CONVENTIONS"]

WORD_CONVENTIONS = ("auto", "delimiter", "sentencepiece", "wordpiece", "characters")


@dataclass(frozen=True)
class WordSpan:
    """A word of a hypothesis and its frames ``start <= t < end``."""

    word: str
    start: int
    end: int


@dataclass(frozen=True)
class Hypothesis:
    """One decoded hypothesis.

    ``score = ctc_score + lm_score``; ``lm_score`` holds everything the scorers added (language
    model, word scores, unknown-word penalties, hotword gains), end of utterance included.
    ``ctc_score`` is the exact CTC log-likelihood of ``tokens`` (all frame paths, float64): the
    final beam is rescored over all frames and re-ranked before the n-best is taken.
    ``token_frames[i]`` is the ``(start, end)`` of token ``i`` on the most likely frame path of the
    hypothesis (end exclusive).
    """

    tokens: List[int]
    text: str
    words: List[WordSpan]
    token_frames: List[Tuple[int, int]]
    score: float
    ctc_score: float
    lm_score: float


def _hypotheses(raw) -> List[Hypothesis]:
    return [
        Hypothesis(
            tokens=list(tokens),
            text=text,
            words=[WordSpan(*word) for word in words],
            token_frames=[tuple(span) for span in frames],
            score=score,
            ctc_score=ctc_score,
            lm_score=lm_score,
        )
        for tokens, frames, text, words, score, ctc_score, lm_score in raw
    ]


def _is_special(token: str) -> bool:
    # <pad>, <unk>, <s>, [PAD], [UNK]...: emitted by some models, spell nothing.
    return len(token) > 2 and ((token[0] == "<" and token[-1] == ">") or (token[0] == "[" and token[-1] == "]"))


def token_roles(
    tokens: Sequence[str], blank: int, convention: str = "auto", word_delimiter: Optional[str] = None
) -> Tuple[str, List[Tuple[str, bool, bool]], str]:
    """(convention, per token (piece, starts a word, ends a word), text separator) of a vocabulary."""
    if convention == "auto":
        if any(t.startswith("▁") for t in tokens):
            convention = "sentencepiece"
        elif any(t.startswith("##") for t in tokens):
            convention = "wordpiece"
        elif word_delimiter is not None or "|" in tokens or " " in tokens:
            convention = "delimiter"
        else:
            convention = "characters"
    delimiters = {word_delimiter} if word_delimiter is not None else {"|", " "}
    roles = []
    for index, token in enumerate(tokens):
        if index == blank or _is_special(token):
            roles.append(("", False, False))
        elif convention == "delimiter":
            roles.append(("", False, True) if token in delimiters else (token, False, False))
        elif convention == "sentencepiece":
            roles.append((token[1:], True, False) if token.startswith("▁") else (token, False, False))
        elif convention == "wordpiece":
            roles.append((token[2:], False, False) if token.startswith("##") else (token, True, False))
        else:
            roles.append((token, True, True))
    return convention, roles, "" if convention == "characters" else " "


def _check_number(value, name: str, allow_inf: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    if math.isnan(value) or (not allow_inf and math.isinf(value)):
        raise ValueError(f"{name} must be a {'number' if allow_inf else 'finite number'}, got {value}")
    return float(value)


def _load_lm(lm):
    """A path to an ARPA file or a ctc_ext.lm.NgramLM (C++), or a Python word-level model."""
    if isinstance(lm, (str, os.PathLike)):
        from .lm import NgramLM

        return NgramLM(os.fspath(lm))
    return lm


class CTCDecoder:
    r"""CTC prefix beam search with a word-level language model, lexicon and hotwords.

    Built once, called on batches like the other decoders.  Hypotheses are ranked by the fused
    score (docs/decoding.md)

    .. math::
        \log p_{ctc}(tokens \mid x) + \text{lm\_weight} \cdot \log p_{lm}(words, \langle/s\rangle)
        + \text{word\_score} \cdot \#words + \text{unk\_score} \cdot \#unknown\ words + hotword\ gains

    Args:
        tokens: the text of every class (index = class), e.g. ``["-", "|", "a", "b", ...]`` or
            word pieces (``"▁the"``, ``"##ing"``).  The blank's text is ignored.
        lm: ``None``, a path to an ARPA file, a :class:`ctc_ext.lm.NgramLM`, or a Python object
            with ``start() -> state``, ``score(state, word) -> (next_state, log_prob)``,
            ``finish(state) -> log_prob`` (natural logs) and optionally ``vocabulary`` (the words
            it knows: partial words are then checked against it).
        lexicon: optional words; only they may be decoded (lexicon-constrained decoding).
        hotwords: optional phrases to boost: a list of strings (weight ``hotword_weight``) or of
            ``(phrase, weight)`` pairs.  They may lie outside the language model's vocabulary.
        lm_weight, word_score, unk_score: fusion weights (``unk_score`` is added once per word the
            language model does not know, as soon as its partial word leaves the vocabulary).
        lm_lookahead: rank a prefix ending inside a word with ``lm_weight`` times the best unigram
            log-probability of the vocabulary words it begins (the look-ahead), replaced by the
            word's real score when it ends.  Changes only which prefixes the beam keeps, never a
            hypothesis' score; needs unigram probabilities (the C++ n-gram model; a Python ``lm``
            gets no look-ahead).  Default ``True``.
        beam_width: hypotheses kept after every frame. ``nbest``: hypotheses returned.
        beam_threshold: drop hypotheses more than this below the frame's best (off: ``inf``).
        token_min_log_prob: a frame extends hypotheses only by classes of at least this
            log-probability (its likeliest class always); off: ``-inf``.
        max_tokens_per_frame: at most this many classes per frame extend hypotheses (off: ``None``).
        blank: index of the blank class, or its token text.
        word_convention: ``"auto"`` (default), ``"delimiter"`` (``|`` or a space between words),
            ``"sentencepiece"`` (``▁`` starts a word), ``"wordpiece"`` (``##`` continues one) or
            ``"characters"`` (every token is a word; the text has no spaces).
        word_delimiter: the delimiter token for ``"delimiter"`` (default: ``|`` and ``" "``).
        num_threads: threads for a batch (default ``torch.get_num_threads()``).
    """

    def __init__(
        self,
        tokens: Sequence[str],
        *,
        lm=None,
        lexicon: Optional[Iterable[str]] = None,
        hotwords: Optional[Iterable[Union[str, Tuple[str, float]]]] = None,
        lm_weight: float = 0.5,
        word_score: float = 0.0,
        unk_score: float = -10.0,
        lm_lookahead: bool = True,
        hotword_weight: float = 10.0,
        beam_width: int = 50,
        nbest: int = 1,
        beam_threshold: float = math.inf,
        token_min_log_prob: float = -math.inf,
        max_tokens_per_frame: Optional[int] = None,
        blank: Union[int, str] = 0,
        word_convention: str = "auto",
        word_delimiter: Optional[str] = None,
        num_threads: Optional[int] = None,
    ):
        if isinstance(tokens, str) or not all(isinstance(t, str) for t in tokens):
            raise TypeError("tokens must be a list of strings (index = class)")
        self.tokens = list(tokens)
        if not self.tokens:
            raise ValueError("tokens must not be empty")
        if isinstance(blank, str):
            if blank not in self.tokens:
                raise ValueError(f"blank token {blank!r} is not among the tokens")
            blank = self.tokens.index(blank)
        self.blank = blank = _check_blank(blank, len(self.tokens))  # C = len(tokens)
        if word_convention not in WORD_CONVENTIONS:
            raise ValueError(f"word_convention must be one of {WORD_CONVENTIONS}, got {word_convention!r}")
        if word_delimiter is not None and word_delimiter not in self.tokens:
            raise ValueError(f"word_delimiter {word_delimiter!r} is not among the tokens")
        self.word_convention, roles, separator = token_roles(self.tokens, blank, word_convention, word_delimiter)
        self._words = _C.TokenWords(roles, separator)
        alphabet = set("".join(piece for piece, _, _ in roles))

        _check_positive_int(beam_width, "beam_width")
        if beam_width > MAX_BEAM_WIDTH:
            raise ValueError(
                f"beam_width must be at most {MAX_BEAM_WIDTH} (hypotheses held per frame), got {beam_width}"
            )
        _check_positive_int(nbest, "nbest")
        self.beam_width, self.nbest = beam_width, nbest
        lm_weight = _check_number(lm_weight, "lm_weight")
        word_score = _check_number(word_score, "word_score")
        unk_score = _check_number(unk_score, "unk_score", allow_inf=True)
        if unk_score == math.inf:
            raise ValueError("unk_score must be below +inf")
        if not isinstance(lm_lookahead, bool):
            raise TypeError(f"lm_lookahead must be a bool, got {type(lm_lookahead).__name__}")
        hotword_weight = _check_number(hotword_weight, "hotword_weight")
        beam_threshold = _check_number(beam_threshold, "beam_threshold", allow_inf=True)
        if beam_threshold < 0:
            raise ValueError(f"beam_threshold must be non-negative, got {beam_threshold}")
        token_min_log_prob = _check_number(token_min_log_prob, "token_min_log_prob", allow_inf=True)
        if max_tokens_per_frame is not None:
            _check_positive_int(max_tokens_per_frame, "max_tokens_per_frame")
        if num_threads is not None:
            _check_positive_int(num_threads, "num_threads")
        self.num_threads = num_threads

        def words_of(text: str, what: str) -> List[str]:
            unknown = sorted(set(text) - alphabet - {" "})
            if unknown:
                raise ValueError(f"{what} {text!r} has characters that no token spells: {unknown}")
            return list(text.replace(" ", "")) if separator == "" else text.split()

        scorers = []
        known_words: List[str] = []
        if lexicon is not None:
            lexicon_words = [w for word in lexicon for w in words_of(word, "lexicon word")]
            if not lexicon_words:
                raise ValueError("lexicon must hold at least one word")
            scorers.append(_C.LexiconScorer(lexicon_words, self._words))
            known_words += lexicon_words
        if hotwords is not None:
            phrases, weights = [], []
            for entry in [hotwords] if isinstance(hotwords, str) else hotwords:
                phrase, weight = (entry, hotword_weight) if isinstance(entry, str) else entry
                weight = _check_number(weight, f"the weight of hotword {phrase!r}")
                if weight <= 0:
                    raise ValueError(f"the weight of hotword {phrase!r} must be positive, got {weight}")
                spelled = words_of(phrase, "hotword")
                if not spelled:
                    raise ValueError("a hotword must not be empty")
                phrases.append(spelled)
                weights.append(weight)
                known_words += spelled
            if phrases:
                scorers.append(_C.HotwordScorer(phrases, weights, self._words))
        self.lm = _load_lm(lm)
        if self.lm is not None:
            scorers.append(
                _C.LanguageModelScorer(
                    self.lm, self._words, lm_weight, word_score, unk_score, known_words, lm_lookahead
                )
            )
        self._decoder = _C.PrefixDecoder(
            len(self.tokens),
            blank,
            beam_width,
            nbest,
            beam_threshold,
            token_min_log_prob,
            max_tokens_per_frame or 0,
            scorers,
            self._words,
        )

    def __call__(
        self, log_probs: Tensor, input_lengths: Optional[Lengths] = None, *, batch_first: bool = False
    ) -> List[List[Hypothesis]]:
        """Decodes a batch: ``log_probs`` :math:`(T, N, C)` (or :math:`(N, T, C)` with
        ``batch_first``), raw logits or log-probabilities, any device (decoded on the CPU after
        one transfer).  Returns per sample the ``nbest`` best hypotheses, best first."""
        logits = _time_major(log_probs, batch_first, "beam_search")
        if logits.shape[2] != len(self.tokens):
            raise ValueError(
                f"log_probs has C = {logits.shape[2]} classes but the decoder has {len(self.tokens)} tokens"
            )
        lengths = _input_lengths_or_full(input_lengths, logits)
        threads = self.num_threads or torch.get_num_threads()
        return [_hypotheses(sample) for sample in self._decoder.decode(logits, lengths, threads)]

    def stream(self) -> "CTCDecoderStream":
        """A stream for one utterance: feed it chunks of frames, then finish it."""
        return CTCDecoderStream(self)


class CTCDecoderStream:
    """Decodes one utterance fed in chunks; :meth:`finish` returns exactly what the decoder
    returns for all the frames at once."""

    def __init__(self, decoder: CTCDecoder):
        self._decoder = decoder
        self._stream = decoder._decoder.stream()

    def feed(self, log_probs: Tensor) -> None:
        """Adds frames: :math:`(T', C)` raw logits or log-probabilities."""
        if not isinstance(log_probs, Tensor):
            raise TypeError(f"log_probs must be a tensor, got {type(log_probs).__name__}")
        if log_probs.dim() != 2 or log_probs.shape[1] != len(self._decoder.tokens):
            raise ValueError(
                f"a chunk must be (T, C) with C = {len(self._decoder.tokens)}, got shape {tuple(log_probs.shape)}"
            )
        if not log_probs.is_floating_point():
            raise ValueError(f"log_probs must be floating, got {log_probs.dtype}")
        self._stream.feed(log_probs.detach().cpu())

    def finish(self) -> List[Hypothesis]:
        return _hypotheses(self._stream.finish())
