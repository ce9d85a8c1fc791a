"""CSV input / output shared by the report CLIs (stdlib csv; clear errors; atomic writes)."""

from collections.abc import Iterable, Sequence
import csv
import os
import sys
import tempfile
import time

from clipmed.errors import UserError

# Report fields can be long: lift the csv module's 128 KiB default.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


def read_rows(path: str, text_columns: Sequence[str]) -> tuple[list[str], list[dict[str, str]]]:
  """Reads a CSV with a header row and checks that the text columns exist.

  Returns:
    (header, rows) with rows as dicts.

  Raises:
    UserError: missing or unreadable file, no header, missing column.
  """
  if not os.path.isfile(path):
    raise UserError(f"input file {path} does not exist; pass the path of a CSV file with a "
                    "header row")
  try:
    with open(path, newline="", encoding="utf-8-sig") as f:
      reader = csv.DictReader(f)
      header = list(reader.fieldnames or [])
      rows = list(reader)
  except (OSError, UnicodeDecodeError, csv.Error) as e:
    raise UserError(f"cannot read {path} as a UTF-8 CSV file: {e}") from e
  if not header:
    raise UserError(f"{path} is empty; expected a header row naming the columns")
  missing = [c for c in text_columns if c not in header]
  if missing:
    raise UserError(f"{path} has no column {', '.join(repr(c) for c in missing)}; its columns "
                    f"are {header}. Pass the report column with --text-column.")
  return header, rows


def row_text(row: dict[str, str], text_columns: Sequence[str]) -> str:
  """The report of one row: the text columns joined by a blank line."""
  return "\n\n".join((row.get(c) or "").strip() for c in text_columns if (row.get(c) or "").strip())


def check_not_empty(path: str, texts: Sequence[str], text_columns: Sequence[str]) -> None:
  """Raises UserError naming the rows whose report is empty (data rows count from 1)."""
  empty = [i + 1 for i, t in enumerate(texts) if not t.strip()]
  if empty:
    shown = ", ".join(str(i) for i in empty[:10]) + (" ..." if len(empty) > 10 else "")
    raise UserError(f"{path}: {len(empty)} row(s) have an empty report in column(s) "
                    f"{list(text_columns)} (data rows {shown}, counting from 1 after the header). "
                    "Fill them in, drop them, or pass --skip-empty to leave their labels blank.")


def write_rows(path: str, header: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
  """Writes a CSV atomically: a temporary file in the same folder, renamed at the end."""
  folder = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(folder):
    raise UserError(f"output folder {folder} does not exist; create it or choose another --output")
  fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".csv", dir=folder)
  try:
    with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
      writer = csv.writer(f)
      writer.writerow(header)
      writer.writerows(rows)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


class Progress:
  """Prints "done/total" to stderr at most every `every` seconds (only for long inputs)."""

  def __init__(self, total: int, what: str, every: float = 5.0, min_total: int = 2000):
    self.total, self.what, self.every = total, what, every
    self.enabled = total >= min_total
    self.start = self.last = time.monotonic()

  def __call__(self, done: int, total: int | None = None) -> None:
    now = time.monotonic()
    if self.enabled and (now - self.last >= self.every or done == self.total):
      self.last = now
      rate = done / max(now - self.start, 1e-9)
      print(f"{self.what}: {done}/{self.total} ({rate:.0f}/s)", file=sys.stderr, flush=True)
