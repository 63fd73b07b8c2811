"""Per-sample records in a JSON-lines file that survives interruption."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

Record = dict[str, Any]


def _encode(value: Any) -> Any:
    # JSON has no NaN: undefined scores are written as null and read back as NaN.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def check_records_path(path: object) -> None:
    if path is not None and not isinstance(path, (str, Path)):
        raise TypeError(
            f"`records_path` must be a str, a Path or None, got {type(path).__name__}."
        )


def _lines(records: list[Record]) -> str:
    return "".join(
        json.dumps({key: _encode(value) for key, value in record.items()}) + "\n"
        for record in records
    )


def _parse(text: str) -> dict[int, Record]:
    records = {}
    for line in text.splitlines():
        if line.strip():
            record = json.loads(line)
            records[int(record["index"])] = {
                key: (math.nan if value is None else value)
                for key, value in record.items()
            }
    return records


def read_records(path: Path) -> dict[int, Record]:
    """The complete records of a file, by index, leaving the file untouched."""
    text = path.read_text() if path.is_file() else ""
    complete, _, _ = text.rpartition("\n")
    return _parse(complete)


class RecordLog:
    """Append-only JSON-lines file of per-sample records keyed by ``index``.

    Records are written batch by batch and flushed to disk at once, so an
    interrupted run loses at most the batch in flight. A truncated last line (a
    crash during the write) is dropped when the file is opened again.

    Parameters
    ----------
    path : str or Path or None
        The file; None keeps records in memory only.
    resume : bool, default False
        Keep the records already in the file and skip their indices. Without
        it an existing file is replaced.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "records.jsonl"
    >>> log = RecordLog(path)
    >>> log.write([{"index": 0, "kendall": 0.5}, {"index": 1, "kendall": float("nan")}])
    >>> RecordLog(path, resume=True).done
    {0, 1}
    """

    def __init__(self, path: str | Path | None, *, resume: bool = False) -> None:
        check_records_path(path)
        self.path = None if path is None else Path(path)
        self.records: dict[int, Record] = {}
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume and self.path.exists():
            self._load()
        else:
            self.path.write_text("")

    def _load(self) -> None:
        assert self.path is not None
        text = self.path.read_text()
        complete, _, _ = text.rpartition("\n")
        if len(complete) + 1 != len(text) and text:
            # Drop the half-written line of an interrupted write.
            with open(self.path, "r+") as handle:
                handle.truncate(len(complete) + 1 if complete else 0)
        self.records.update(_parse(complete))

    @property
    def done(self) -> set[int]:
        return set(self.records)

    def write(self, records: list[Record]) -> None:
        for record in records:
            self.records[int(record["index"])] = record
        if self.path is None or not records:
            return
        with open(self.path, "a") as handle:
            handle.write(_lines(records))
            handle.flush()
            os.fsync(handle.fileno())

    def rewrite(self, records: list[Record]) -> None:
        """Replace the file's content by ``records`` in one atomic step."""
        self.records = {int(record["index"]): record for record in records}
        if self.path is None:
            return
        partial = self.path.with_name(self.path.name + ".partial")
        with open(partial, "w") as handle:
            handle.write(_lines(self.sorted_records()))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, self.path)

    def sorted_records(self) -> list[Record]:
        return [self.records[index] for index in sorted(self.records)]
