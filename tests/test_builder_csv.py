"""The csv builder on a fake hospital export (tests/fakes/csv.py)."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from clipmed import errors
from clipmed.report import chexpert
from input_pipeline import datasets
from input_pipeline import prepare as prepare_lib
from input_pipeline.builders import base
from input_pipeline.builders import listing
from tests.conftest import ROOT, prepared_records
from tests.fakes import csv as fake

SETTINGS = dict(max_reject_fraction=0.5, vocab_size=200, image_size=64)
EXPORT = dict(csv="export.csv", study_column="exam_id", patient_column="patient",
              view_column="view")
CUSTOM = dict(csv="custom.csv", image_column="file", report_column="text", split_column="split",
              label_columns="Nodule,Mass,cardiomegaly")
# The seeded split (seed 0) of the export's 8 patients, hand-copied from one run: it must not
# change.
PATIENT_SPLIT = {"P1": "train", "P2": "validation", "P3": "train", "P4": "train", "P5": "train",
                 "P6": "train", "P7": "train", "P8": "test"}
CHEX = chexpert.INDEX


def _prepare(root, options, name="tfds", download="download", **kwargs):
  return prepare_lib.prepare("csv", manual_dir=str(root / download), data_dir=str(root / name),
                             options=options, progress=False, workers=1, **{**SETTINGS, **kwargs})




def _corr(row, expected: np.ndarray) -> float:
  """Correlation of a stored image with the written pixels resized to its shape."""
  image = row["image"][..., 0].astype(np.float32)
  scaled = expected.astype(np.float32) / expected.max()
  resized = np.asarray(Image.fromarray(scaled, mode="F").resize(image.shape[::-1]))
  return float(np.corrcoef(resized.ravel(), image.ravel())[0, 1])


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  root = tmp_path_factory.mktemp("csv")
  fake.write(str(root / "download"))
  return root, {"export": _prepare(root, EXPORT), "custom": _prepare(root, CUSTOM)}


def test_counts_rejects_and_filtered_rows(prepared):
  _, summaries = prepared
  summary = summaries["export"]
  # train: E1 (2 rows), E2, E4, E5, E9 (E6 truncated, E7 missing, E8 empty report);
  # validation: E3; test: E10. The row without an image path is left out.
  assert summary["splits"] == {"train": 6, "validation": 1, "test": 1}
  assert summary["filtered"] == {"row without an image path": 1}
  with open(summary["rejects_csv"]) as f:
    rejects = {row["image_id"]: row for row in csv.DictReader(f)}
  assert {k: r["reason"] for k, r in rejects.items()} == {
      fake.TRUNCATED: "image file is truncated", fake.MISSING: "file not found",
      "images/e8.png": "empty report (no findings or impression)"}
  assert rejects["images/e8.png"]["study_id"] == fake.EMPTY_REPORT_STUDY


def test_labels_views_and_reports(prepared):
  _, summaries = prepared
  train = prepared_records(summaries["export"], "train")
  pa, lateral = train["images/e1_pa.png"], train[fake.JPEG]
  assert pa["study_id"] == lateral["study_id"] == b"E1" and pa["patient_id"] == b"P1"
  assert (pa["view"], lateral["view"]) == (b"PA", b"LATERAL")  # "Lat" -> LATERAL
  assert train[fake.RGBA]["view"] == b"FRONTAL" and train[fake.PNG16]["view"] == b"AP"
  # The report is on E1's first row only; both images share it, CRLF read as line breaks.
  assert lateral["report"] == pa["report"]
  assert pa["findings"].decode() == "Moderate cardiomegaly.\nSmall left pleural effusion."
  assert pa["impression"].decode() == "Cardiomegaly and effusion."
  # No headers: all of it is findings.
  assert train[fake.PNG16]["findings"].decode() == "Lungs are clear.\nNo pneumothorax."
  assert train[fake.RGBA]["impression"].decode() == "No acute disease."
  assert "images\\e9.png" in train  # the path as written in the CSV
  # Labels from Cardiomegaly / pleural_effusion / EDEMA, in CheXpert order; the rest NaN.
  labels = pa["labels"]
  assert labels[CHEX["Cardiomegaly"]] == 1.0 and labels[CHEX["Pleural Effusion"]] == 1.0
  assert np.isnan(labels[CHEX["Edema"]]) and np.isnan(labels[CHEX["Pneumothorax"]])
  np.testing.assert_array_equal(lateral["labels"], labels)
  e2 = train[fake.PNG16]["labels"]
  assert e2[CHEX["Cardiomegaly"]] == 0.0 and e2[CHEX["Pleural Effusion"]] == 0.0
  assert np.isnan(e2[CHEX["Pneumothorax"]])  # not the labeler's: the report says "No pneumothorax"
  e3 = prepared_records(summaries["export"], "validation")[fake.MONOCHROME1]["labels"]
  assert e3[CHEX["Cardiomegaly"]] == -1.0 and e3[CHEX["Edema"]] == 1.0
  assert np.isnan(train[fake.JPEG_DICOM]["labels"]).all()


def test_pixels_of_every_format(prepared):
  _, summaries = prepared
  rows = {**prepared_records(summaries["export"], "train"),
          **prepared_records(summaries["export"], "validation")}
  index = {row[0]: i for i, row in enumerate(fake.ROWS)}
  for name in (fake.PNG16, fake.MONOCHROME1):
    assert rows[name]["image"].shape == (64, 53, 1) and rows[name]["image"].dtype == np.uint8
    assert _corr(rows[name], fake.pixels(index[name], bits=16)) > 0.95, name
    assert rows[name]["image"].max() > 240 and rows[name]["image"].min() < 15, name
  # MONOCHROME1: stored inverted, read bone bright (the burned-in marker top-left is white).
  marker = rows[fake.MONOCHROME1]["image"][4:6, 4:5, 0]
  assert marker.min() > 200
  for name in (fake.JPEG_DICOM, fake.RGBA, fake.JPEG, "images/e1_pa.png"):
    assert rows[name]["image"].shape == (64, 53, 1), name
    assert _corr(rows[name], fake.pixels(index[name])) > 0.95, name


def test_seeded_split_by_patient(prepared):
  _, summaries = prepared
  summary = summaries["export"]
  assert listing.seeded_split(sorted(PATIENT_SPLIT), seed=0) == PATIENT_SPLIT
  with open(os.path.join(summary["data_dir"], base.INDEX_FILE)) as f:
    index = json.load(f)
  for split, fields in index.items():
    assert {PATIENT_SPLIT[p] for p in fields["patient_id"]} == {split}
  with open(os.path.join(summary["data_dir"], "metadata.json")) as f:
    meta = json.load(f)
  assert meta["splits"]["train"]["image_id_sha256"] == base.split_hash(
      ["images/e1_pa.png", fake.JPEG, fake.PNG16, fake.JPEG_DICOM, fake.RGBA, "images\\e9.png"])
  assert meta["splits"]["validation"]["image_id_sha256"] == base.split_hash([fake.MONOCHROME1])
  assert meta["class_names"] == list(chexpert.CATEGORIES)
  assert meta["options"]["study_column"] == "exam_id"


def test_custom_classes_and_split_column(prepared):
  _, summaries = prepared
  summary = summaries["custom"]
  assert summary["splits"] == {"train": 2, "validation": 2, "test": 1} and summary["rejected"] == 0
  with open(os.path.join(summary["data_dir"], "metadata.json")) as f:
    assert json.load(f)["class_names"] == ["Nodule", "Mass", "cardiomegaly"]
  train = prepared_records(summary, "train")
  row = train["images/e1_pa.png"]
  np.testing.assert_array_equal(row["labels"], [1.0, 0.0, 1.0])
  assert row["study_id"] == b"images/e1_pa.png" and row["patient_id"] == b""
  assert row["view"] == b"FRONTAL"  # no view column
  # Hard negatives: the labeler's labels kept where a class is a CheXpert category.
  neg = row["neg_labels"]
  assert neg.shape == (3,) and np.isnan(neg[:2]).all()
  assert neg[2] == (0.0 if row["neg_entity"] == b"Cardiomegaly" else 1.0)
  np.testing.assert_array_equal(prepared_records(summary, "validation")["images/e5.png"]["labels"],
                                [np.nan, 1.0, np.nan])
  assert set(prepared_records(summary, "test")) == {"images/e10.png"}


def test_given_chexpert_label_columns_leave_the_others_blank(prepared):
  root, _ = prepared
  options = dict(EXPORT, label_columns="EDEMA, Cardiomegaly")  # no pleural_effusion
  builder = datasets.DATASETS["csv"].builder(str(root / "tfds_listing"), options=options)
  assert builder.CLASS_NAMES == chexpert.CATEGORIES
  found = builder.list_studies(str(root / "download"))
  e3 = next(s for s in found.splits["validation"] if s.study_id == "E3").labels
  assert e3[CHEX["Edema"]] == 1.0 and e3[CHEX["Cardiomegaly"]] == -1.0
  e1 = next(s for s in found.splits["train"] if s.study_id == "E1").labels
  assert e1[CHEX["Cardiomegaly"]] == 1.0 and np.isnan(e1[CHEX["Pleural Effusion"]])
  assert "['EDEMA', 'Cardiomegaly']" in found.notes[0]


def _write(folder, header, rows):
  folder.mkdir(exist_ok=True)
  fake.write_csv(str(folder / "data.csv"), header, rows)
  return folder.name


@pytest.mark.parametrize("header, rows, options, message", [
    (["image_path", "report"], [("a.png", "x")], dict(image_column="path"),
     r"data.csv has no column 'path' \(--image_column\); its columns are \['image_path', "
     r"'report'\]"),
    (["image_path", "report", "split"], [("a.png", "x", "train"), ("b.png", "y", "holdout")],
     dict(split_column="split"), r"data.csv, row 3, column 'split': the split 'holdout' is not"),
    (["image_path", "report", "Edema"], [("a.png", "x", "yes")], {},
     r"data.csv, row 2, column 'Edema': 'yes' is not a label"),
    (["image_path", "report", "Edema"], [("a.png", "x", "")], dict(label_columns="Edema,Nodule"),
     r"no column 'Nodule' \(--label_columns\)"),
    (["image_path", "report"], [("a.png", "x"), ("a.png", "y")], {},
     r"data.csv, rows 2 and 3: the image 'a.png' is listed twice"),
    (["image_path", "report", "study"], [("a.png", "x", "S1"), ("b.png", "y", "S1")],
     dict(study_column="study"), r"rows 2 and 3: study 'S1' has two different reports"),
    (["image_path", "report", "pid"], [("a.png", "x", " ")], dict(patient_column="pid"),
     r"data.csv, row 2: the column 'pid' is blank"),
    (["image_path", "report", "Edema", "edema"], [("a.png", "x", "", "")], {},
     r"the columns 'Edema' and 'edema' are both 'Edema'"),
])
def test_bad_rows_and_columns_stop_with_one_line(tmp_path, header, rows, options, message):
  download = _write(tmp_path / "download", header, rows)
  with pytest.raises(errors.DataError, match=message) as e:
    _prepare(tmp_path, options, download=download)
  assert "\n" not in str(e.value)


def test_choosing_the_csv_and_option_errors(tmp_path):
  download = tmp_path / "download"
  download.mkdir()
  with pytest.raises(errors.DataError, match=r"--manual_dir=.*download is empty"):
    _prepare(tmp_path, {})
  (download / "notes.txt").write_text("not a CSV")
  with pytest.raises(errors.DataError, match=r"no CSV file in .*download \(found \['notes.txt'\]"):
    _prepare(tmp_path, {})
  fake.write(str(download))
  with pytest.raises(errors.DataError, match=r"several CSV files \['custom.csv', 'export.csv'\]"):
    _prepare(tmp_path, {})
  with pytest.raises(errors.DataError, match=r"--csv=other.csv: .*other.csv does not exist"):
    _prepare(tmp_path, {"csv": "other.csv"})
  with pytest.raises(errors.ConfigError, match="names a column twice"):
    _prepare(tmp_path, {"label_columns": "Edema,edema"})
  with pytest.raises(errors.ConfigError, match="--report_column is empty"):
    _prepare(tmp_path, {"report_column": " "})
  with pytest.raises(errors.ConfigError, match="csv has no option"):
    _prepare(tmp_path, {"views": "all"})
  from input_pipeline.builders import csv_export  # pylint: disable=g-import-not-at-top
  assert csv_export.class_names("") == chexpert.CATEGORIES
  assert csv_export.class_names("none") == chexpert.CATEGORIES
  assert csv_export.class_names("pleural_effusion, EDEMA") == chexpert.CATEGORIES
  assert csv_export.class_names("Edema,Nodule") == ("Edema", "Nodule")


def test_cli_with_the_new_flags_and_labeler_labels(prepared):
  root, _ = prepared
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  args = [sys.executable, "-m", "input_pipeline.prepare", "--dataset=csv",
          f"--manual_dir={root / 'download'}", f"--data_dir={root / 'tfds_cli'}",
          "--image_size=64", "--vocab_size=200", "--max_reject_fraction=0.5", "--workers=1",
          "--csv=export.csv", "--study_column=exam_id", "--view_column=view",
          "--label_columns=none"]
  proc = subprocess.run(args, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = json.loads(proc.stdout.strip().splitlines()[-1])
  assert summary["rejected"] == 3 and sum(summary["splits"].values()) == 8
  rows = {}
  for split in summary["splits"]:
    rows.update(prepared_records(summary, split))
  # Without a patient column the seeded split is by study: E1's two images stay together.
  assert rows["images/e1_pa.png"]["view"] == b"PA" and rows[fake.JPEG]["view"] == b"LATERAL"
  # clipmed's labeler on the reports, not the CSV's columns.
  e2 = rows[fake.PNG16]["labels"]
  assert e2[CHEX["Pneumothorax"]] == 0.0 and np.isnan(e2[CHEX["Cardiomegaly"]])
  e1 = rows["images/e1_pa.png"]["labels"]
  assert e1[CHEX["Cardiomegaly"]] == 1.0 and e1[CHEX["Pleural Effusion"]] == 1.0
