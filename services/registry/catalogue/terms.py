"""检索词 — the terms of Chinese full-text search: characters and pairs of adjacent characters.

Chinese has no spaces to split words on, and the embedded PostgreSQL has no extension for it (no
``pg_trgm``, no ``zhparser``), so text is indexed by its characters: every character (unigram) and
every two adjacent characters (bigram) of every word. A "word" is a run of letters and digits of
any script after NFKC normalisation (full-width ＡＢＣ１２ become ABC12) and lower-casing; anything
else — punctuation, spaces, symbols — separates words. Pure functions, no I/O: the models keep an
entry's terms on every write, and a search splits its query with the same rules.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Iterator
from typing import Any


def words(text: str) -> Iterator[str]:
    """The runs of letters and digits of ``text``, normalised."""
    current: list[str] = []
    for ch in unicodedata.normalize("NFKC", text).lower():
        if ch.isalnum():
            current.append(ch)
        elif current:
            yield "".join(current)
            current = []
    if current:
        yield "".join(current)


def terms(*texts: str) -> list[str]:
    """A document's terms: every character and every two adjacent characters of every word,
    without repeats, sorted (so that the stored array does not change unless the text does)."""
    found: set[str] = set()
    for text in texts:
        for word in words(text):
            found.update(word)
            found.update(word[i : i + 2] for i in range(len(word) - 1))
    return sorted(found)


def query_terms(q: str) -> list[str]:
    """What an entry must hold to match ``q``: the bigrams of each word, or the word itself when
    it is one character. Empty when ``q`` has no letter or digit."""
    found: set[str] = set()
    for word in words(q):
        found.update([word] if len(word) == 1 else (word[i : i + 2] for i in range(len(word) - 1)))
    return sorted(found)


def entry_terms(name: str, summary: str, items: Iterable[dict[str, Any]]) -> list[str]:
    """An entry's terms: of its name, summary and 信息项 names."""
    return terms(name, summary, *(str(item.get("name", "")) for item in items))
