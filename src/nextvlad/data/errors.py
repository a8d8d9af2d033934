"""Error types of the data layer; every one names the file and record where it can."""

from __future__ import annotations

from nextvlad.errors import NextVLADError


class DataError(NextVLADError):
    """A problem with input data (files, records, schemas)."""


class NoDataFilesError(DataError):
    """A data file that does not exist, or a glob that matches no file."""


class RecordError(DataError):
    """One record that cannot be used; names the file, record index and byte offset when known.

    ``reason`` is the bare explanation; ``path``, ``index`` (0-based position of the record in its
    file) and ``offset`` (byte offset of the record's header in the file) locate it.
    """

    def __init__(
        self,
        reason: str,
        *,
        path: str | None = None,
        index: int | None = None,
        offset: int | None = None,
    ) -> None:
        self.reason = reason
        self.path = path
        self.index = index
        self.offset = offset
        super().__init__(self._message())

    def _message(self) -> str:
        where = []
        if self.path is not None:
            where.append(self.path)
        if self.index is not None:
            where.append(f"record {self.index}")
        if self.offset is not None:
            where.append(f"byte offset {self.offset}")
        return f"{', '.join(where)}: {self.reason}" if where else self.reason

    def __reduce__(self) -> tuple[object, ...]:  # keep keyword fields across DataLoader workers
        return (_rebuild, (type(self), self.reason, self.path, self.index, self.offset))

    def located(self, path: str, index: int, offset: int) -> RecordError:
        """The same error with its location filled in (for readers that know it)."""
        return type(self)(
            self.reason,
            path=path if self.path is None else self.path,
            index=index if self.index is None else self.index,
            offset=offset if self.offset is None else self.offset,
        )


def _rebuild(
    cls: type[RecordError], reason: str, path: str | None, index: int | None, offset: int | None
) -> RecordError:
    return cls(reason, path=path, index=index, offset=offset)


class CorruptRecordError(RecordError):
    """Bytes that are not a valid TFRecord or protocol-buffer message (truncation, CRC mismatch)."""

    # True when nothing after this record in its file can be read (truncation, bad length).
    ends_file: bool = False


class SchemaError(RecordError):
    """A well-formed record that does not fit the expected schema (missing key, wrong size...)."""


class ClassRangeError(SchemaError):
    """A label at or above the number of classes: the data has more classes than the model."""
