"""The Kaggle 2019 segment submission (``Class,Segments``), read one class line at a time.

Format: an optional header line ``Class,Segments`` (Google's starter code writes it and its
evaluator breaks on it, google/youtube-8m#100), then one line a class::

    CLASS,VID:START VID:START ...

``CLASS`` a non-negative integer, the entries separated by spaces (any whitespace here),
by descending confidence; a class line may have no entry. Blank lines are skipped. Every
problem is a :class:`SubmissionError` naming the file and the line: a line without the comma
or with a second one, a class that is not an integer, an entry not of the form
``vid:start`` (a video id without ``:`` or whitespace, then an integer), a class listed twice,
bytes that are not UTF-8.

Unlike Google's reader, the last entry of a line is read without its line break (Google's
``line.split(",")`` keeps the ``\\n`` on it, so that entry never matches a rating).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import NamedTuple

from nextvlad.errors import NextVLADError

__all__ = ["HEADER", "VIDEO_HEADER", "SubmissionError", "SubmissionLine", "read_submission"]

HEADER = "Class,Segments"
VIDEO_HEADER = "VideoId,LabelConfidencePairs"  # the 2018 video-level submission's

_CLASS = re.compile(r"[0-9]+")
_ENTRY = r"[^\s:]+:[0-9]+"
_ENTRIES = re.compile(rf"\s*(?:{_ENTRY}(?:\s+{_ENTRY})*)?\s*")
_ONE_ENTRY = re.compile(_ENTRY)
_NUMBER = r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
_PAIRS = re.compile(rf"\s*[0-9]+\s+{_NUMBER}(?:\s+[0-9]+\s+{_NUMBER})*\s*")  # 2018 lines


class SubmissionError(NextVLADError, ValueError):
    """A segment submission file that is not in the Kaggle 2019 format (names file and line)."""


class SubmissionLine(NamedTuple):
    """One class line of a submission."""

    line: int  # 1-based line number in the file
    class_id: int
    segments: list[str]  # ``vid:start`` entries, by descending confidence


def read_submission(path: str | os.PathLike[str]) -> Iterator[SubmissionLine]:
    """The class lines of the submission at ``path``, in file order, one at a time.

    Raises:
        SubmissionError: a malformed line (see the module docstring), at the line it is met.
        OSError: a file that cannot be opened or read.
    """
    name = os.fspath(path)
    seen: dict[int, int] = {}  # class -> line it was given on
    header_allowed = True  # until the first line that is not blank
    with open(name, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise SubmissionError(
                    f"{name}, line {number}: not UTF-8 text (byte {err.start})"
                ) from None
            text = text.lstrip("\ufeff").strip() if number == 1 else text.strip()
            if not text:
                continue
            if header_allowed:
                header_allowed = False
                if text == HEADER:
                    continue
                if text == VIDEO_HEADER:
                    raise SubmissionError(_video_level(name, number, "the header"))
            parsed = _parse_line(name, number, text)
            first = seen.setdefault(parsed.class_id, number)
            if first != number:
                raise SubmissionError(
                    f"{name}, line {number}: class {parsed.class_id} is listed twice "
                    f"(first on line {first})"
                )
            yield parsed


def _parse_line(name: str, number: int, text: str) -> SubmissionLine:
    where = f"{name}, line {number}"
    head, comma, rest = text.partition(",")
    if not comma:
        raise SubmissionError(f"{where}: expected CLASS,SEGMENTS, found no comma: {_cut(text)}")
    if "," in rest:
        raise SubmissionError(
            f"{where}: expected CLASS,SEGMENTS with one comma, found more: {_cut(text)}"
        )
    head = head.strip()
    if not _CLASS.fullmatch(head):
        if _PAIRS.fullmatch(rest):
            raise SubmissionError(_video_level(name, number, f"{_cut(text)!r}"))
        if text.split(",") == HEADER.split(","):
            raise SubmissionError(f"{where}: the header {HEADER!r} may only be the first line")
        raise SubmissionError(f"{where}: class {_cut(head)!r} is not a non-negative integer")
    if not _ENTRIES.fullmatch(rest):
        bad = next(token for token in rest.split() if not _ONE_ENTRY.fullmatch(token))
        raise SubmissionError(f"{where}: entry {_cut(bad)!r} is not of the form vid:start")
    return SubmissionLine(number, int(head), rest.split())


def _video_level(name: str, number: int, what: str) -> str:
    """The error of a 2018 submission's line (a video's 'label score' pairs) given as 2019's."""
    return (
        f"{name}, line {number}: {what} of a 2018 video-level submission ({VIDEO_HEADER}), "
        f"not of a 2019 segment submission ({HEADER}); `nextvlad predict --segments` writes "
        "the latter"
    )


def _cut(text: str, limit: int = 60) -> str:
    """``text`` shortened for a message."""
    return text if len(text) <= limit else text[: limit - 3] + "..."
