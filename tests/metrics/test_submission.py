"""read_submission: the Kaggle 2019 Class,Segments format; every bad file is our error."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nextvlad.metrics import SubmissionError, read_submission


def _write(tmp_path: Path, data: str | bytes) -> Path:
    path = tmp_path / "submission.csv"
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)
    return path


def test_reads_header_lines_and_blank_lines(tmp_path: Path) -> None:
    path = _write(tmp_path, "Class,Segments\r\n3,a:0 b:5\n\n7,\n12, c:10\tdd:0 \n")
    lines = list(read_submission(path))
    assert [(x.line, x.class_id, x.segments) for x in lines] == [
        (2, 3, ["a:0", "b:5"]),
        (4, 7, []),
        (5, 12, ["c:10", "dd:0"]),
    ]


def test_header_optional_and_bom(tmp_path: Path) -> None:
    assert [x.class_id for x in read_submission(_write(tmp_path, "1,a:0\n"))] == [1]
    path = _write(tmp_path, "\ufeffClass,Segments\n1,a:0")  # no final line break
    assert [x.segments for x in read_submission(path)] == [["a:0"]]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("Class,Segments\n1 a:0\n", 2, "expected CLASS,SEGMENTS, found no comma"),
        ("1,a:0,b:0\n", 1, "expected CLASS,SEGMENTS with one comma"),
        ("x,a:0\n", 1, "class 'x' is not a non-negative integer"),
        ("-1,a:0\n", 1, "class '-1'"),
        ("1.5,a:0\n", 1, "class '1.5'"),
        ("1,a:0 b\n", 1, "entry 'b' is not of the form vid:start"),
        ("1,a:x\n", 1, "entry 'a:x'"),
        ("1,:5\n", 1, "entry ':5'"),
        ("1,a:0\n2,b:0\n1,c:0\n", 3, "class 1 is listed twice \\(first on line 1\\)"),
        ("1,a:0\nClass,Segments\n", 2, "the header 'Class,Segments' may only be the first line"),
    ],
)
def test_errors_name_file_and_line(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(SubmissionError, match=f"^{re.escape(str(path))}, line {line}: {message}"):
        list(read_submission(path))


def test_not_utf8(tmp_path: Path) -> None:
    path = _write(tmp_path, b"1,a:0\n2,\xff:0\n")
    with pytest.raises(SubmissionError, match=r"line 2: not UTF-8"):
        list(read_submission(path))


def test_lines_come_one_at_a_time(tmp_path: Path) -> None:
    """A streaming reader: the first line comes before a bad later line is read."""
    lines = read_submission(_write(tmp_path, "1,a:0\nbad\n"))
    assert next(lines).class_id == 1
    with pytest.raises(SubmissionError, match="line 2"):
        next(lines)


_PIECES = ["Class,Segments", "1", "22", ",", "a:0", "b:15", " ", "\n", "\r\n", ":", "-", "x",
           "\t", "\ufeff", "\xff", "\x00", "\u3000", "٣"]  # fmt: skip


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.one_of(
        st.binary(max_size=200),
        st.lists(st.sampled_from(_PIECES), max_size=30).map(
            lambda p: "".join(p).encode("utf-8", "surrogatepass")
        ),
    )
)
def test_fuzzed_files_only_raise_our_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "fuzz.csv"
    path.write_bytes(data)
    try:
        for line in read_submission(path):
            assert line.class_id >= 0
            assert all(
                ":" in entry and entry.rsplit(":", 1)[1].isdigit() for entry in line.segments
            )
    except SubmissionError as err:
        assert str(err).startswith(f"{path}, line ")


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("VideoId,LabelConfidencePairs\nabcd,3 0.9 17 0.25\n", 1),
        ("\nabcd,3 0.9 17 2.5e-01\n", 2),
        ("3,a:0\nabcd,3 0.9\n", 2),
    ],
)
def test_a_2018_submission_is_named_as_such(tmp_path: Path, text: str, line: int) -> None:
    with pytest.raises(SubmissionError, match=rf", line {line}: .* a 2018 video-level submission"):
        list(read_submission(_write(tmp_path, text)))


def test_a_class_that_is_no_integer_is_not_called_2018(tmp_path: Path) -> None:
    with pytest.raises(SubmissionError, match="class 'x' is not a non-negative integer"):
        list(read_submission(_write(tmp_path, "x,a:0 b:5\n")))
