"""A hospital's own export: one CSV file listing images and their reports.

    python -m input_pipeline.prepare --dataset=csv --manual_dir=/data/export \\
        --data_dir=/data/tfds [--csv=export.csv] [--image_column=image_path] \\
        [--report_column=report] [--study_column=C] [--patient_column=C] [--split_column=C] \\
        [--view_column=C] [--label_columns=A,B,...|none]

The layout: --manual_dir holds the CSV (or several: --csv=FILE, relative to --manual_dir or
absolute, picks one) as spreadsheets save it (UTF-8 with or without BOM, CRLF, line breaks inside
quoted report cells; .csv or .csv.gz). One row per image, with the columns
  --image_column    (default image_path) the image file, relative to the CSV's folder (or
                    absolute; "\\" separators are read as "/"); PNG 8/16-bit, RGB(A), JPEG or DICOM
  --report_column   (default report) the free-text report; FINDINGS and IMPRESSION are taken from
                    it when it has headers (clipmed.report.sections), else all of it is findings
  --study_column    rows with the same value are one study (the images share its report, labels
                    and split); without it every row is its own study (study_id = image path)
  --patient_column  the patient_id; the seeded split is then by patient
  --split_column    train / val / validation / test (any case); anything else stops with an error
  --view_column     the projection (PA, AP, LATERAL, LL, FRONTAL, ... stored upper case; "LAT" is
                    LATERAL; blank is unknown); without it every image is FRONTAL
  --label_columns   labels 1 / 0 / -1 / blank (also "1.0", ...). Default: the columns named like
                    CheXpert's 14 categories, ignoring case, spaces and underscores. "none": no
                    label columns.

Split: the split column, else seeded 70/15/15 (listing.seeded_split with --seed) over the patients
(with --patient_column) or the studies of the CSV. Labels: class names CheXpert-14 when the label
columns are CheXpert categories (columns not given are NaN, so the clinical stream works); the
given column names in the given order when any is not (custom classes; the hard negatives' labels
then keep only the classes named like a CheXpert category, NaN elsewhere); clipmed's labeler on the
report when there are no label columns. image_id = the image path as written in the CSV.
Rejected (rejects CSV): an image missing on disk ("file not found"), an unreadable image, every
image of a study with an empty report. Left out (filtered): rows without an image path.
Stops with one line naming the file, row and value: a missing column, an unknown split value, a
label that is not 1 / 0 / -1 / blank, a blank study or patient id, an image listed twice, rows of
one study that disagree on report, labels, split or patient.
"""

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from clipmed import errors
from clipmed.report import chexpert
from clipmed.report import sections
from input_pipeline.builders import base
from input_pipeline.builders import listing

HOMEPAGE = "your own export (README.md, Datasets: csv)"
SPLITS = {"train": "train", "val": "validation", "validation": "validation", "test": "test"}
VIEW_SYNONYMS = {"LAT": "LATERAL", "POSTEROANTERIOR": "PA", "ANTEROPOSTERIOR": "AP"}
NO_LABELS = "none"
_CSV_SUFFIXES = (".csv", ".csv.gz")
_PLURAL = {"report": "reports", "labels": "labels", "split": "splits",
           "patient_id": "patient ids"}


def _key(name: str) -> str:
  """A column name compared with CheXpert's: lower case without spaces and underscores."""
  return "".join(name.lower().replace("_", " ").split())


_CHEXPERT_BY_KEY = {_key(name): name for name in chexpert.CATEGORIES}


def _given_columns(value: str) -> list[str]:
  return [name.strip() for name in value.split(",") if name.strip()]


def class_names(label_columns: str) -> tuple[str, ...]:
  """The K label classes of a --label_columns value (module docstring, "Labels").

  Raises:
    ConfigError: a column named twice.
  """
  names = _given_columns(label_columns)
  keys = [_key(n) for n in names]
  if len(set(keys)) < len(keys):
    raise errors.ConfigError(f"csv: --label_columns={label_columns!r} names a column twice")
  if keys == [NO_LABELS] or all(k in _CHEXPERT_BY_KEY for k in keys):
    return chexpert.CATEGORIES
  return tuple(names)


class ClipmedCsv(base.RealDatasetBuilder):
  """Images and reports listed in a CSV export (module docstring)."""

  VERSION = tfds.core.Version("1.0.0")
  DATASET = "csv"
  HOMEPAGE = HOMEPAGE
  HAS_REPORTS = True
  OPTIONS = {"csv": ("", None), "image_column": ("image_path", None),
             "report_column": ("report", None), "study_column": ("", None),
             "patient_column": ("", None), "split_column": ("", None), "view_column": ("", None),
             "label_columns": ("", None)}

  def __init__(self, *, config: base.RealDatasetConfig, **kwargs):
    # Read by base._info during TFDS's __init__: a function of the options, not of the CSV.
    options = dict(config.options)
    for flag in ("image_column", "report_column"):
      if not options.get(flag, "x").strip():
        raise errors.ConfigError(f"csv: --{flag} is empty; name the CSV column that holds it")
    self.CLASS_NAMES = class_names(options.get("label_columns", ""))  # pylint: disable=invalid-name
    super().__init__(config=config, **kwargs)

  def list_studies(self, manual_dir: str) -> listing.Listing:
    path = self._find_csv(manual_dir)
    header, rows = listing.read_csv(path)
    opts = self.options
    columns = {flag: opts[flag] for flag in ("image_column", "report_column", "study_column",
                                             "patient_column", "split_column", "view_column")
               if opts[flag]}
    for flag, name in columns.items():
      _require(path, header, name, flag)
    label_columns = self._label_columns(path, header)
    folder = os.path.dirname(os.path.abspath(path))

    out = listing.Listing(splits={"train": [], "validation": [], "test": []},
                          notes=[f"{len(rows)} rows in {path}; " + (
                              f"labels from the columns {list(label_columns.values())}"
                              if label_columns else "no label columns: clipmed's labeler labels "
                              "the reports")])
    studies: dict[str, dict[str, Any]] = {}
    row_of_image: dict[str, int] = {}
    for i, row in enumerate(rows):
      number = i + 2  # the spreadsheet's row number (the header is row 1)
      image = row.get(columns["image_column"], "").strip()
      if not image:
        out.filtered["row without an image path"] = (
            out.filtered.get("row without an image path", 0) + 1)
        continue
      if image in row_of_image:
        raise errors.DataError(f"{path}, rows {row_of_image[image]} and {number}: the image "
                               f"{image!r} is listed twice; keep one row per image")
      row_of_image[image] = number
      study_id = self._cell(path, row, number, columns.get("study_column")) or image
      fields = {
          "patient_id": self._cell(path, row, number, columns.get("patient_column")),
          "split": self._split(path, row, number, columns.get("split_column")),
          "report": _lines(row.get(columns["report_column"], "")),
          "labels": self._labels(path, row, number, label_columns),
      }
      view = _view(row.get(columns["view_column"], "")) if "view_column" in columns else "FRONTAL"
      ref = listing.ImageRef(image, os.path.join(folder, image.replace("\\", "/")), view)
      study = studies.get(study_id)
      if study is None:
        studies[study_id] = dict(fields, images=[ref], row=number)
      else:
        _check_same(path, study_id, study, fields, number)
        study["images"].append(ref)

    if columns.get("split_column"):
      split_of = {s: study["split"] for s, study in studies.items()}
    else:
      by_patient = bool(columns.get("patient_column"))
      keys = {s: study["patient_id"] if by_patient else s for s, study in studies.items()}
      assigned = listing.seeded_split(list(keys.values()), seed=self.builder_config.seed)
      split_of = {s: assigned[key] for s, key in keys.items()}
    for study_id in sorted(studies):
      study, split = studies[study_id], split_of[study_id]
      refs = sorted(study["images"], key=lambda r: r.image_id)
      present = [r for r in refs if os.path.isfile(r.path)]
      out.rejects += [listing.Reject(split, study_id, r.image_id, r.path, "file not found")
                      for r in refs if r not in present]
      if not present:
        continue
      found = sections.split_sections(study["report"])
      findings, impression = found.get("findings", ""), found.get("impression", "")
      if not findings and not impression:
        findings = sections.clinical_text(study["report"])
      out.splits[split].append(listing.Study(
          study_id=study_id, patient_id=study["patient_id"], images=present,
          labels=study["labels"], findings=findings, impression=impression))
    return out

  def _study_tasks(self, split, studies):
    """As the base, with the hard negatives' labels in the custom classes (module docstring)."""
    tasks = super()._study_tasks(split, studies)
    if self.CLASS_NAMES != chexpert.CATEGORIES:
      for task in tasks:
        labeler = task.report_fields["neg_labels"]  # [14], CheXpert order
        task.report_fields["neg_labels"] = np.array(
            [labeler[chexpert.INDEX[_CHEXPERT_BY_KEY[_key(name)]]]
             if _key(name) in _CHEXPERT_BY_KEY else np.nan for name in self.CLASS_NAMES],
            np.float32)
    return tasks

  # ----------------------------------------------------------------------------- the columns

  def _find_csv(self, manual_dir: str) -> str:
    """The CSV file: --csv, else the only .csv / .csv.gz in manual_dir; DataError otherwise."""
    found = sorted(n for n in os.listdir(manual_dir) if n.lower().endswith(_CSV_SUFFIXES))
    chosen = self.options["csv"]
    if chosen:
      path = os.path.join(manual_dir, os.path.expanduser(chosen))
      if not os.path.isfile(path):
        raise errors.DataError(f"csv: --csv={chosen}: {path} does not exist; the CSV files in "
                               f"{manual_dir} are {found or 'none'}")
      return path
    if len(found) == 1:
      return os.path.join(manual_dir, found[0])
    if not found:
      contents = sorted(os.listdir(manual_dir))[:8] or "nothing"
      raise errors.DataError(f"csv: no CSV file in {manual_dir} (found {contents}); put the "
                             "export's .csv there or pass --csv=FILE")
    raise errors.DataError(f"csv: {manual_dir} holds several CSV files {found}; choose one with "
                           f"--csv=FILE")

  def _label_columns(self, path: str, header: list[str]) -> dict[str, str]:
    """Class name -> the CSV column holding it ({} when the labeler labels the reports)."""
    given = self.options["label_columns"].strip()
    if given.lower() == NO_LABELS:
      return {}
    if not given:  # every column named like a CheXpert category
      out = {}
      for column in header:
        name = _CHEXPERT_BY_KEY.get(_key(column))
        if name in out:
          raise errors.DataError(f"{path}: the columns {out[name]!r} and {column!r} are both "
                                 f"{name!r}; pick the label columns with --label_columns=A,B,...")
        if name:
          out[name] = column
      return out
    names = _given_columns(given)
    for column in names:
      _require(path, header, column, "label_columns")
    if self.CLASS_NAMES == chexpert.CATEGORIES:
      return {_CHEXPERT_BY_KEY[_key(column)]: column for column in names}
    return {column: column for column in names}

  def _labels(self, path: str, row: Mapping[str, str], number: int,
              label_columns: Mapping[str, str]) -> np.ndarray | None:
    """The row's labels float32 [K] in CLASS_NAMES order (NaN where no column), or None."""
    if not label_columns:
      return None
    labels = np.full((len(self.CLASS_NAMES),), np.nan, np.float32)
    for k, name in enumerate(self.CLASS_NAMES):
      column = label_columns.get(name)
      if column is None:
        continue
      try:
        labels[k] = listing.parse_label(row.get(column, ""))
      except ValueError:
        raise errors.DataError(f"{path}, row {number}, column {column!r}: {row.get(column)!r} is "
                               "not a label; use 1, 0, -1 or blank, or choose the label columns "
                               "with --label_columns") from None
    return labels

  @staticmethod
  def _cell(path: str, row: Mapping[str, str], number: int, column: str | None) -> str:
    """The stripped value of an id column ("" without the column); DataError when blank."""
    if not column:
      return ""
    value = row.get(column, "").strip()
    if not value:
      raise errors.DataError(f"{path}, row {number}: the column {column!r} is blank; every row "
                             "needs its id there")
    return value

  @staticmethod
  def _split(path: str, row: Mapping[str, str], number: int, column: str | None) -> str:
    if not column:
      return ""
    value = row.get(column, "")
    split = SPLITS.get(value.strip().lower())
    if split is None:
      raise errors.DataError(f"{path}, row {number}, column {column!r}: the split {value!r} is "
                             f"not one of train, val, validation, test")
    return split


def _require(path: str, header: list[str], column: str, flag: str) -> None:
  if column not in header:
    raise errors.DataError(f"{path} has no column {column!r} (--{flag}); its columns are "
                           f"{header}")


def _lines(text: str) -> str:
  """A report cell with "\n" line ends (spreadsheets keep CRLF inside quoted cells), stripped."""
  return text.replace("\r\n", "\n").replace("\r", "\n").strip()


def _view(value: str) -> str:
  view = " ".join(value.upper().split())
  return VIEW_SYNONYMS.get(view, view)


def _check_same(path: str, study_id: str, study: dict[str, Any], fields: dict[str, Any],
                number: int) -> None:
  """DataError when a row of a study disagrees with the study's first row.

  A report written on some rows of the study only (the others blank) is fine.
  """
  for name, value in fields.items():
    first = study[name]
    if name == "report":
      same = not value or not first or value.split() == first.split()
      study[name] = first or value
    elif name == "labels":
      same = first is None or np.array_equal(first, value, equal_nan=True)
    else:
      same = value == first
    if not same:
      raise errors.DataError(
          f"{path}, rows {study['row']} and {number}: study {study_id!r} has two different "
          f"{_PLURAL[name]}; make the rows of a study agree or leave out --study_column")
