"""What a dataset's listing step hands the shared builder: studies, their images, and rejects.

A dataset module reads the user's untouched download (index CSVs, report files) and returns a
`Listing`: per split the `Study` records to build, the files it had to leave out (`Reject`: a
listed file that is missing, an empty or undecodable report) and the images it left out on
purpose (`Listing.filtered`, e.g. lateral views). Everything after that (report processing, image
decoding, writing, the rejects CSV) is shared: input_pipeline/builders/base.py.

Also here: reading the CSV files of the downloads the way spreadsheets and PhysioNet save them
(`read_csv`: .csv or .csv.gz, UTF-8 with or without BOM, CRLF, line breaks inside quoted cells).
"""

import csv
import dataclasses
import gzip
import io
import os
from collections.abc import Iterable, Sequence

import numpy as np

from clipmed import errors
from clipmed.report import sections

csv.field_size_limit(2**31 - 1)  # report cells can be long


# Views as the builders store them: the dataset's own projection label, upper case, with these
# names where the dataset says so; a frontal image of unknown AP/PA is "FRONTAL".
FRONTAL_VIEWS = ("PA", "AP", "FRONTAL")
LATERAL_VIEWS = ("LATERAL", "LL", "RL")


def is_frontal(view: str) -> bool:
  """Whether a stored view is a frontal projection (config.data.views="frontal" keeps it)."""
  return view.upper() in FRONTAL_VIEWS


@dataclasses.dataclass(frozen=True)
class ImageRef:
  """One image file of a study.

  Attributes:
    image_id: the dataset's own identifier (MIMIC dicom_id, CheXpert Path, Open-i file name, the
      CSV's path); unique within a split.
    path: absolute path of the file in the download.
    view: the projection, upper case: "PA", "AP", "FRONTAL" (AP/PA unknown), "LATERAL", "LL",
      another label of the dataset, or "" when unknown.
  """
  image_id: str
  path: str
  view: str


@dataclasses.dataclass
class Study:
  """A study to build: its images share its report and labels.

  Attributes:
    study_id: the dataset's study identifier (unique within a split).
    patient_id: for patient-level splits and grouping ("" when the dataset has none).
    images: the study's images (after the dataset's view filter).
    labels: the dataset's own labels float32 [K] (1 / 0 / -1 / NaN), or None to use clipmed's
      labeler on the report.
    findings: FINDINGS section text ("" when absent); report datasets only.
    impression: IMPRESSION section text ("" when absent); report datasets only.
  """
  study_id: str
  patient_id: str
  images: list[ImageRef]
  labels: np.ndarray | None = None
  findings: str = ""
  impression: str = ""

  @property
  def report(self) -> str:
    """FINDINGS + IMPRESSION as one text, headed like SynthCXR's reports."""
    return sections.join_fields(self.findings, self.impression)


@dataclasses.dataclass(frozen=True)
class Reject:
  """A file that could not be used, and why (written to the rejects CSV)."""
  split: str
  study_id: str
  image_id: str
  path: str
  reason: str


@dataclasses.dataclass
class Listing:
  """The result of a dataset's listing step.

  Attributes:
    splits: split name -> the studies to build, in a deterministic order.
    rejects: files left out because they cannot be used (counted in the reject rate).
    filtered: reason -> number of images left out on purpose (e.g. "view not frontal").
    notes: facts about the download worth printing (e.g. "reports from mimic-cxr-reports.zip").
  """
  splits: dict[str, list[Study]]
  rejects: list[Reject] = dataclasses.field(default_factory=list)
  filtered: dict[str, int] = dataclasses.field(default_factory=dict)
  notes: list[str] = dataclasses.field(default_factory=list)


def find_file(root: str, names: Sequence[str], *, dataset: str, homepage: str,
              what: str) -> str:
  """The first of `names` (relative to root) that exists; else a DataError naming them.

  Args:
    root: the download directory (manual_dir).
    names: accepted relative paths, most usual first (e.g. "x.csv.gz", "x.csv").
    dataset: the --dataset name, for the message.
    homepage: where the download comes from.
    what: what the file is, e.g. "the split file".
  """
  for name in names:
    path = os.path.join(root, name)
    if os.path.exists(path):
      return path
  found = sorted(os.listdir(root))[:8] if os.path.isdir(root) else []
  raise errors.DataError(
      f"{dataset}: {what} is missing: expected {os.path.join(root, names[0])}"
      + (f" (or {', '.join(names[1:])})" if len(names) > 1 else "")
      + f"; found {found or 'nothing'} in {root}. Point --manual_dir at the unpacked download "
      f"from {homepage}")


def read_csv(path: str) -> tuple[list[str], list[dict[str, str]]]:
  """Reads a .csv or .csv.gz file with a header row.

  Handles what spreadsheets and download sites produce: a UTF-8 byte-order mark, CRLF line ends,
  line breaks inside quoted cells, and a trailing empty column from rows that end in a comma.

  Returns:
    (header, rows): column names stripped of surrounding spaces, rows as dicts.

  Raises:
    DataError: the file cannot be read as UTF-8 CSV or has no header.
  """
  try:
    if path.endswith(".gz"):
      with gzip.open(path, "rb") as f:
        text = f.read().decode("utf-8-sig")
    else:
      with open(path, "rb") as f:
        text = f.read().decode("utf-8-sig")
  except (OSError, EOFError, UnicodeDecodeError) as e:
    raise errors.DataError(f"cannot read {path} as a UTF-8 CSV file: {e}") from e
  reader = csv.reader(io.StringIO(text, newline=""))
  try:
    header = [name.strip() for name in next(reader)]
    rows = [dict(zip(header, (cell for cell in row))) for row in reader if any(row)]
  except StopIteration:
    raise errors.DataError(f"{path} is empty; expected a header row naming the columns") from None
  except csv.Error as e:
    raise errors.DataError(f"{path} is not a valid CSV file: {e}") from e
  return header, rows


def require_columns(path: str, header: Iterable[str], columns: Iterable[str]) -> None:
  """Raises DataError naming the missing columns and the ones the file has."""
  header = list(header)
  missing = [c for c in columns if c not in header]
  if missing:
    raise errors.DataError(f"{path} has no column {', '.join(repr(c) for c in missing)}; its "
                           f"columns are {header}")


def parse_label(value: str | None) -> float:
  """A CheXpert-style label cell: "1.0" / "0.0" / "-1.0" / "" -> 1, 0, -1, NaN."""
  if value is None or not value.strip():
    return float("nan")
  number = float(value)
  if number not in (1.0, 0.0, -1.0):
    raise ValueError(f"label {value!r} is not 1, 0, -1 or blank")
  return number


def seeded_split(keys: Sequence[str], *, seed: int,
                 fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)) -> dict[str, str]:
  """Assigns each distinct key (a patient, or a study) to train / validation / test.

  Deterministic and independent of the input order: keys are sorted, shuffled with
  np.random.default_rng(seed), and cut at the fractions (GLoRIA's 70/15/15 by default).

  Returns:
    key -> "train" | "validation" | "test".
  """
  distinct = sorted(set(keys))
  order = np.random.default_rng(seed).permutation(len(distinct))
  n_train = int(round(fractions[0] * len(distinct)))
  n_val = int(round(fractions[1] * len(distinct)))
  if not fractions[2]:  # no test split: the rounding remainder stays in validation
    n_val = len(distinct) - n_train
  out = {}
  for rank, index in enumerate(order):
    split = "train" if rank < n_train else "validation" if rank < n_train + n_val else "test"
    out[distinct[index]] = split
  return out
