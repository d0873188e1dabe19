"""Conventions shared by the models and the builder: the special words, paths, word lists."""

import os
from typing import List, Sequence, Union

SENTENCE_BEGIN = "<s>"
SENTENCE_END = "</s>"
UNKNOWN = "<unk>"
PathLike = Union[str, "os.PathLike[str]"]


def existing_file(path: PathLike, what: str) -> str:
    """``path`` as a string, after checking that it is a file (FileNotFoundError otherwise)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{what} '{path}' does not exist")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{what} '{path}' is a directory")
    return path


def as_words(words: Union[str, Sequence[str]]) -> List[str]:
    """A sentence as a list of words: a string is split on whitespace."""
    if isinstance(words, str):
        return words.split()
    words = list(words)
    for word in words:
        if not isinstance(word, str):
            raise TypeError(f"words must be a string or a sequence of strings, got an item {word!r}")
    return words
