"""CSV tables with a header (geo.csv, flight truth): one reader, one set of messages. Standard library only (the
torch-free runtime reads geo tags with it).

Column names are matched case-insensitively and without surrounding blanks; a byte-order mark is ignored (tables
saved by spreadsheets). Every error names the file, and the line where a row is wrong.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from lpn_edge.errors import LpnEdgeError


@dataclass(frozen=True)
class CsvTable:
    path: Path
    label: str  # how messages name the file, e.g. "geo CSV" or "--truth"
    columns: dict[str, str]  # normalised name -> the header's own spelling
    rows: list[tuple[int, dict[str, str]]]  # (line number in the file, the row as csv.DictReader gives it)

    def has(self, *names: str) -> bool:
        return all(name in self.columns for name in names)

    def require(self, names: tuple[str, ...], expected: str) -> None:
        """LpnEdgeError naming the missing columns unless the header has all `names`."""
        missing = [name for name in names if name not in self.columns]
        if missing:
            raise LpnEdgeError(f"{self.label} {self.path} lacks the column{'s' if len(missing) > 1 else ''} "
                               f"{', '.join(missing)}; expected {expected}")

    def cell(self, row: dict[str, str], name: str) -> str:
        """The row's value in column `name`, stripped ('' when the row is short)."""
        return (row.get(self.columns[name]) or "").strip()

    def number(self, line: int, row: dict[str, str], name: str, kind: type = float, blank: float | None = None):
        """The row's value in column `name` as a `kind` (float or int); a blank cell gives `blank` where one is
        given, and anything else that is not a number an error naming the line and the cell."""
        text = self.cell(row, name)
        if not text and blank is not None:
            return blank
        try:
            return kind(text)
        except ValueError:
            expected = "a whole number" if kind is int else "a number"
            raise self.error(line, f"{name} must be {expected}; got {text!r}") from None

    def error(self, line: int, message: str) -> LpnEdgeError:
        return LpnEdgeError(f"{self.label} {self.path} line {line}: {message}")


def read_csv_table(path: str | Path, label: str) -> CsvTable:
    path = Path(path)
    if not path.is_file():
        raise LpnEdgeError(f"{label} {path} does not exist")
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = {name.strip().lower(): name for name in reader.fieldnames or [] if name is not None}
            rows = list(enumerate(reader, start=2))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LpnEdgeError(f"cannot read {label} {path}: {getattr(exc, 'strerror', None) or exc}") from None
    return CsvTable(path, label, columns, rows)
