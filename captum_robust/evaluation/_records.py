"""Per-sample records in a JSON-lines file that survives interruption.

Beside each record file lies ``<name>.settings.json``: the fingerprint of the
settings that produced the records (see ``_fingerprint.py``), so that a resume
under other settings is refused instead of mixing two experiments.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from captum_robust._utils.validation import check_bool

Record = dict[str, Any]

SETTINGS_FORMAT = 1


class RecordsMismatchError(ValueError):
    """Records on disk were produced under other settings than this run's.

    Raised by :func:`~captum_robust.evaluation.evaluate_robustness` with
    ``resume=True``; the message names each differing setting with its value in
    the records and in this run.

    Attributes
    ----------
    differences : dict
        ``{setting: (value in the records, value in this run)}``; empty when the
        records carry no settings at all (files of an earlier version).
    """

    def __init__(
        self, message: str, differences: Mapping[str, tuple[Any, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.differences = dict(differences or {})


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


def _check_record(record: object, position: int) -> int:
    if not isinstance(record, Mapping):
        raise TypeError(
            f"`records` must hold dicts, got {type(record).__name__} at position "
            f"{position}."
        )
    index = record.get("index")
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ValueError(
            "`records` must hold dicts with a non-negative int 'index', got "
            f"{index!r} at position {position}."
        )
    return index


def _lines(records: Sequence[Record]) -> str:
    return "".join(
        json.dumps({key: _encode(value) for key, value in record.items()}) + "\n"
        for record in records
    )


def _parse(text: str, path: Path) -> dict[int, Record]:
    records = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"`records_path` {path}: line {number} is not a JSON record "
                f"({error.msg}); the file is corrupt. Remove the line or start "
                "afresh with resume=False."
            ) from None
        index = record.get("index") if isinstance(record, dict) else None
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise ValueError(
                f"`records_path` {path}: line {number} is not a record (a JSON "
                "object with a non-negative int 'index'); the file is corrupt."
            )
        records[index] = {
            key: (math.nan if value is None else value) for key, value in record.items()
        }
    return records


def _complete_text(path: Path) -> tuple[str, str]:
    """The file's text up to its last newline, and the whole text."""
    text = path.read_text() if path.is_file() else ""
    complete, _, _ = text.rpartition("\n")
    return complete, text


def read_records(path: Path) -> dict[int, Record]:
    """The complete records of a file, by index, leaving the file untouched."""
    return _parse(_complete_text(path)[0], path)


def settings_path(path: str | Path) -> Path:
    """``records.jsonl`` -> ``records.jsonl.settings.json``."""
    path = Path(path)
    return path.with_name(path.name + ".settings.json")


def read_settings(path: str | Path) -> dict[str, Any] | None:
    """The settings stored beside a record file, or None if there are none."""
    where = settings_path(path)
    if not where.is_file():
        return None
    try:
        stored = json.loads(where.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(
            f"`records_path` {path}: its settings file {where} is not JSON "
            f"({error.msg}); start afresh with resume=False."
        ) from None
    if not isinstance(stored, dict) or stored.get("format") != SETTINGS_FORMAT:
        raise RecordsMismatchError(
            f"`records_path` {path}: its settings file {where} has an unknown "
            "format; start afresh with resume=False."
        )
    return stored["settings"]


def write_settings(path: str | Path, settings: Mapping[str, Any]) -> None:
    """Store ``settings`` beside a record file, in one atomic step."""
    _atomic_write(
        settings_path(path),
        json.dumps({"format": SETTINGS_FORMAT, "settings": settings}, indent=1),
    )


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)


class RecordLog:
    """Append-only JSON-lines file of per-sample records keyed by ``index``.

    Records are written batch by batch and flushed to disk at once, so an
    interrupted run loses at most the batch in flight. A truncated last line (a
    crash during the write) is dropped when the file is opened again; any other
    line that is not a record raises a ValueError naming the file and the line.

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
        check_bool(resume, "resume")
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
        complete, text = _complete_text(self.path)
        # Parse first: a corrupt file is reported, not truncated.
        records = _parse(complete, self.path)
        if len(complete) + 1 != len(text) and text:
            # Drop the half-written line of an interrupted write.
            with open(self.path, "r+") as handle:
                handle.truncate(len(complete) + 1 if complete else 0)
        self.records.update(records)

    @property
    def done(self) -> set[int]:
        """Indices of the samples that have a record."""
        return set(self.records)

    def write(self, records: Sequence[Record]) -> None:
        """Append ``records`` (dicts with an int ``index``) and flush them to disk."""
        if isinstance(records, Mapping) or not isinstance(records, Sequence):
            raise TypeError(
                f"`records` must be a list of dicts, got {type(records).__name__}."
            )
        indices = [_check_record(record, i) for i, record in enumerate(records)]
        for index, record in zip(indices, records):
            self.records[index] = dict(record)
        if self.path is None or not records:
            return
        with open(self.path, "a") as handle:
            handle.write(_lines(records))
            handle.flush()
            os.fsync(handle.fileno())

    def rewrite(self, records: Sequence[Record]) -> None:
        """Replace the file's content by ``records`` in one atomic step."""
        if isinstance(records, Mapping) or not isinstance(records, Sequence):
            raise TypeError(
                f"`records` must be a list of dicts, got {type(records).__name__}."
            )
        indices = [_check_record(record, i) for i, record in enumerate(records)]
        self.records = {i: dict(record) for i, record in zip(indices, records)}
        if self.path is None:
            return
        _atomic_write(self.path, _lines(self.sorted_records()))

    def sorted_records(self) -> list[Record]:
        """Every record, by index."""
        return [self.records[index] for index in sorted(self.records)]
