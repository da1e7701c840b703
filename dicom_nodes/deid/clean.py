"""Cleaning of free text (action ``C`` of PS3.15 Table E.1-1 for descriptors and content).

"Clean" means: replace with values of similar meaning known not to contain identifying
information. A description such as ``CT CHEST W/O CONTRAST — HOMER SIMPSON 12/03/1961`` keeps
its clinical words and loses the identifying ones. Removed are

* every word of every value the profile removes or replaces in the same object (names, IDs,
  addresses, institutions, accession numbers, …), compared case-insensitively;
* anything shaped like a date (``19610312``, ``12/03/1961``, ``1961-03-12``), a time with
  seconds, a number of five or more digits (IDs, phone numbers), an e-mail address, a UID.

Words of one or two characters are not taken from identifying values (``J`` of a middle
initial would otherwise strip every ``J`` from every description). The result is whitespace-
normalised; it may be empty.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["TextCleaner"]

_PATTERNS = re.compile(
    r"""
    [\w.+-]+@[\w-]+(\.[\w-]+)+                        # e-mail
  | \b\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}\b                # 12/03/1961, 1961-03-12
  | \b\d{1,2}:\d{2}(:\d{2})?\b                         # 10:32, 10:32:05
  | \b\d+(\.\d+){3,}\b                                 # UIDs and dotted numbers
  | \+?\d[\d\s().-]{6,}\d                             # phone numbers, long IDs with spaces
  | \b\d{5,}\b                                         # 5+ digit numbers, YYYYMMDD
    """,
    re.VERBOSE,
)
_WORD_SPLIT = re.compile(r"[\s^=,;:/\\()\[\]{}\"'`]+")
_SPACES = re.compile(r"\s{2,}")


class TextCleaner:
    """Removes the identifying words collected from one object, and identifier-shaped text."""

    def __init__(self, identifying: Iterable[str] = ()) -> None:
        words: set[str] = set()
        for value in identifying:
            for raw in _WORD_SPLIT.split(value):
                word = raw.strip(".-_")
                if len(word) >= 3:
                    words.add(word.casefold())
        self._words = words
        self._word_re = (
            re.compile(
                "|".join(
                    rf"(?<!\w){re.escape(w)}(?!\w)" for w in sorted(words, key=len, reverse=True)
                ),
                re.IGNORECASE,
            )
            if words
            else None
        )

    def clean(self, text: str) -> str:
        """*text* without identifying words or identifier-shaped substrings."""
        out = _PATTERNS.sub(" ", text)
        if self._word_re is not None:
            out = self._word_re.sub(" ", out)
        return _SPACES.sub(" ", out).strip(" ^,;-")
