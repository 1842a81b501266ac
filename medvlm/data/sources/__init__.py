"""Readers for each original data format, registered by name.

A source is a function ``read(path, split, report, **options) -> Iterator[Sample]``. It reads the
file as published, yields :class:`~medvlm.data.records.Sample` records, and tells ``report`` about
every record it cannot use: under the ``error`` policy the first problem raises a
:class:`~medvlm.errors.DataError` naming the file, record and key; under ``skip`` it is counted
and listed, never dropped silently.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from medvlm import registry
from medvlm.data.records import Sample
from medvlm.errors import DataError
from medvlm.registry import Registry


@dataclass
class Problem:
    file: str
    record: str | None
    key: str | None
    message: str

    def __str__(self) -> str:
        return str(DataError(self.message, file=self.file, record=self.record, key=self.key))


@dataclass
class ReadReport:
    """Counts what a reader saw, kept and skipped (with reasons).

    Every problem is listed, but a record with several (a bad image *and* bad turns) is one skipped
    record: problems reported one after another for the same file and record while no further record
    was read (``read`` unchanged) count once.
    """

    source: str
    policy: Literal["error", "skip"] = "error"
    read: int = 0
    kept: int = 0
    problems: list[Problem] = field(default_factory=list)
    skipped: int = 0
    _last_skipped: tuple[int, str, str] | None = field(default=None, repr=False)

    def problem(self, message: str, *, file: str, record: Any = None, key: str | None = None) -> None:
        """Record a bad record: raise under the error policy, count it under skip."""
        record_id = None if record is None else str(record)
        if self.policy == "error":
            raise DataError(message, file=file, record=record_id, key=key)
        self.problems.append(Problem(file, record_id, key, message))
        same_record = record_id is not None and self._last_skipped == (self.read, file, record_id)
        if not same_record:
            self.skipped += 1
        self._last_skipped = None if record_id is None else (self.read, file, record_id)

    def summary(self) -> dict[str, Any]:
        reasons = Counter(p.message for p in self.problems)
        return {"source": self.source, "read": self.read, "kept": self.kept, "skipped": self.skipped,
                "skip_reasons": dict(reasons.most_common())}


class SourceReader(Protocol):
    def __call__(self, path: str | None, split: str, report: ReadReport,
                 **options: Any) -> Iterator[Sample]: ...


SOURCES: Registry[SourceReader] = registry.SOURCES
register_source: Callable[[str], Callable[[SourceReader], SourceReader]] = SOURCES.register


def get_source(name: str) -> SourceReader:
    return SOURCES.get(name)


def read_source(name: str, path: str | None, split: str, *, policy: Literal["error", "skip"] = "error",
                limit: int | None = None, **options: Any) -> tuple[list[Sample], ReadReport]:
    """Read a whole source into memory, returning the samples and what was skipped.

    The ``dicom`` option (any source: window, channels, frame — see
    :class:`medvlm.data.dicom.DicomSettings`) is validated here and attached to every sample, so the
    same rendering applies in training, prediction and inspection.
    """
    report = ReadReport(source=name, policy=policy)
    dicom = _dicom_settings(options.pop("dicom", None), path)
    samples: list[Sample] = []
    for sample in get_source(name)(path, split, report, **options):
        if dicom is not None:
            sample.meta.extra["dicom"] = dicom
        samples.append(sample)
        if limit is not None and len(samples) >= limit:
            break
    report.kept = len(samples)
    return samples, report


def _dicom_settings(value: Any, path: str | None) -> dict[str, Any] | None:
    if value is None:
        return None
    from medvlm.data.dicom import DicomSettings

    try:
        return DicomSettings.parse(value).to_dict()
    except DataError as exc:
        raise DataError(f"option {exc}", file=path) from None
