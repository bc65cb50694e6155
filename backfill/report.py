"""The verify report: one row per difference, written as found (never held in memory)."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from types import TracebackType
from typing import IO

from backfill.errors import UserError


@dataclass(frozen=True, slots=True)
class Difference:
    category: str
    key: str
    source_version_id: str
    replica_key: str
    replica_version_id: str
    detail: str


COLUMNS = [f.name for f in fields(Difference)]


class ReportWriter:
    """CSV (with a header) or a JSON array, by the file's extension; or nothing when no path."""

    def __init__(self, path: str | None, columns: list[str] | None = None) -> None:
        self.path = path
        self.columns = columns or COLUMNS
        self._file: IO[str] | None = None
        self._csv: csv.DictWriter[str] | None = None
        self._rows = 0

    def __enter__(self) -> ReportWriter:
        if self.path:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # keys can be sensitive
                os.fchmod(fd, 0o600)  # a file that was there keeps its mode through O_CREAT: not this one
            except OSError as exc:
                raise UserError(
                    f"cannot write the report {self.path} ({exc.strerror}): pass --report in a writable directory"
                ) from None
            self._file = open(fd, "w", encoding="utf-8", newline="")
            if self.path.endswith(".csv"):
                self._csv = csv.DictWriter(self._file, fieldnames=self.columns)
                self._csv.writeheader()
            else:
                self._file.write("[")
        return self

    @property
    def rows(self) -> int:
        return self._rows

    def write(self, d: Difference | Mapping[str, object]) -> None:
        """One row: a Difference, or a mapping of the writer's columns."""
        self._rows += 1
        if self._file is None:
            return
        row = asdict(d) if isinstance(d, Difference) else dict(d)
        if self._csv is not None:
            self._csv.writerow(row)
        else:
            self._file.write(("\n" if self._rows == 1 else ",\n") + json.dumps(row, ensure_ascii=False))

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if self._file is not None:
            if self._csv is None:
                self._file.write("\n]\n")
            self._file.close()
