"""The rsna_pneumonia builder on a fake copy of the official layout
(tests/fakes/rsna_pneumonia.py)."""

import csv
import json
import os

import numpy as np
import pytest
from PIL import Image

from clipmed import errors
from input_pipeline import datasets
from input_pipeline import prepare as prepare_lib
from input_pipeline.builders import base
from tests.conftest import prepared_records
from tests.fakes import images as fake_images
from tests.fakes import rsna_pneumonia as fake
from tests.fakes import siim_pneumothorax as fake_siim

OPTIONS = dict(max_reject_fraction=0.5, image_size=64)
PID = fake.patient_id
# The seeded patient-level split of the fixture's 12 patients (seed 0), fixed: a change in
# listing.seeded_split or in the builder's keys would silently move patients between splits.
SPLIT = {"train": ["p02", "p03", "p04", "p05", "p06", "p08", "p10", "p12"],
         "validation": ["p01", "p07"], "test": ["p09", "p11"]}


def _prepare(tmp_path, name="tfds", options=None, **kwargs):
  return prepare_lib.prepare("rsna_pneumonia", manual_dir=str(tmp_path / "download"),
                             data_dir=str(tmp_path / name), options=options or {},
                             progress=False, **{**OPTIONS, **kwargs})




def _listing(download, seed=0):
  builder = datasets.DATASETS["rsna_pneumonia"].builder(str(download) + "_tfds", seed=seed)
  return builder.list_studies(str(download))


def _short_names_by_split(found):
  names = {PID(p[0]): p[0] for p in fake.PATIENTS}
  return {split: sorted(names[s.study_id] for s in studies)
          for split, studies in found.splits.items()}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  tmp_path = tmp_path_factory.mktemp("rsna")
  fake.write(str(tmp_path / "download"))
  return tmp_path, _prepare(tmp_path, workers=1)


def test_counts_rejects_and_filtered(prepared):
  _, summary = prepared
  # train: 8 patients, p06 truncated; validation: p01, p07 missing; test: p09, p11.
  assert summary["splits"] == {"train": 7, "validation": 1, "test": 2}
  assert summary["rejected"] == 2
  assert summary["filtered"] == {"not in stage_2_train_labels.csv": 1}
  with open(summary["rejects_csv"]) as f:
    rejects = {row["image_id"]: row for row in csv.DictReader(f)}
  assert set(rejects) == {PID(fake.TRUNCATED), PID(fake.MISSING)}
  assert rejects[PID(fake.MISSING)]["reason"] == "file not found"
  assert rejects[PID(fake.MISSING)]["split"] == "validation"
  assert rejects[PID(fake.TRUNCATED)]["reason"].startswith("DICOM file is truncated")
  assert rejects[PID(fake.TRUNCATED)]["split"] == "train"


def test_labels_views_and_ids(prepared):
  _, summary = prepared
  train = prepared_records(summary, "train")
  # Hand-checked against PATIENTS: (Pneumonia, Normal, No Lung Opacity / Not Normal).
  expected = {"p02": [0, 1, 0], "p03": [0, 0, 1], "p04": [1, 0, 0], "p08": [1, 0, 0],
              "p10": [0, 0, 1], "p05": [0, 1, 0]}
  for short, labels in expected.items():
    np.testing.assert_array_equal(train[PID(short)]["labels"], np.float32(labels), err_msg=short)
  two_boxes = prepared_records(summary, "validation")[PID(fake.TWO_BOXES)]  # 2 rows per file -> 1 example
  np.testing.assert_array_equal(two_boxes["labels"], np.float32([1, 0, 0]))
  row = train[PID("p02")]
  assert row["study_id"].decode() == row["patient_id"].decode() == PID("p02")
  assert row["view"].decode() == "AP" and train[PID("p03")]["view"].decode() == "PA"
  assert train[PID(fake.NO_VIEW)]["view"].decode() == "FRONTAL"  # ViewPosition absent
  assert row["image"].shape == (64, 53, 1) and row["image"].dtype == np.uint8  # 96 x 80 -> 64


def test_splits_are_seeded_by_patient_and_hashed(prepared):
  _, summary = prepared
  with open(os.path.join(summary["data_dir"], "metadata.json")) as f:
    meta = json.load(f)
  assert meta["class_names"] == ["Pneumonia", "Normal", "No Lung Opacity / Not Normal"]
  rejected = {fake.TRUNCATED, fake.MISSING}
  for split, names in SPLIT.items():
    kept = [PID(n) for n in names if n not in rejected]
    assert set(prepared_records(summary, split)) == set(kept), split
    assert meta["splits"][split]["image_id_sha256"] == base.split_hash(kept)


def test_pixels_of_jpeg_baseline_and_monochrome1_dicoms(prepared):
  _, summary = prepared
  train = prepared_records(summary, "train")
  # JPEG-baseline DICOM: the written image, resized (JPEG loss only).
  k = [p[0] for p in fake.PATIENTS].index("p02")
  source = Image.fromarray(fake_images.chest_like(96, 80, seed=k)).resize((53, 64),
                                                                          Image.Resampling.LANCZOS)
  got = train[PID("p02")]["image"][..., 0].astype(int)
  assert np.abs(got - np.asarray(source, int)).mean() < 4
  # MONOCHROME1, 16-bit: stored inverted; comes out bone bright like a MONOCHROME2 image.
  mono1 = train[PID(fake.MONO1)]["image"][..., 0].astype(int)
  assert mono1[3:6, 3:5].mean() > 200              # the burned-in marker is white
  assert mono1[20:40, 24:29].mean() > mono1[20:40, 8:14].mean() + 50  # mediastinum > lung


def test_split_depends_on_the_label_files_and_the_seed_only(tmp_path):
  download = tmp_path / "download"
  fake.write(str(download))
  on_disk = {split: [n for n in names if n != fake.MISSING] for split, names in SPLIT.items()}
  assert _short_names_by_split(_listing(download)) == on_disk
  os.remove(download / "stage_2_train_images" / f"{PID('p02')}.dcm")
  without_p02 = _short_names_by_split(_listing(download))
  assert without_p02["train"] == [n for n in SPLIT["train"] if n != "p02"]
  assert without_p02["test"] == SPLIT["test"]
  assert _short_names_by_split(_listing(download, seed=1)) != without_p02


def test_layout_and_label_file_errors(tmp_path):
  download = tmp_path / "download"
  fake.write(str(download))
  os.remove(download / "stage_2_train_labels.csv")
  with pytest.raises(errors.DataError, match=r"stage_2_train_labels.csv.*kaggle.com") as e:
    _listing(download)
  assert "\n" not in str(e.value)
  other = tmp_path / "siim"  # the manual_dir of another dataset
  fake_siim.write(str(other))
  with pytest.raises(errors.DataError, match=r"expected .*stage_2_train_labels.csv; found .*"
                     r"train-rle.csv"):
    _listing(other)

  fake.write(str(download))
  labels, classes = fake.label_rows()
  header = ["patientId", "x", "y", "width", "height", "Target"]
  fake.write_csv(str(download / fake.LABELS_CSV), header, labels[:-1])  # p12 only in classes
  with pytest.raises(errors.DataError, match=rf"patientId {PID('p12')} is in .*{fake.CLASSES_CSV}"
                     rf" but not in .*{fake.LABELS_CSV}"):
    _listing(download)
  flipped = [row[:5] + ["1"] if row[0] == PID("p02") else row for row in labels]
  fake.write_csv(str(download / fake.LABELS_CSV), header, flipped)
  with pytest.raises(errors.DataError, match=rf"{PID('p02')} has Target 1 .* class 'Normal'"):
    _listing(download)
  fake.write_csv(str(download / fake.LABELS_CSV), header, labels)
  fake.write_csv(str(download / fake.CLASSES_CSV), ["patientId", "class"],
                 classes[:3] + [[PID("p03"), "Pneumonia"]])
  with pytest.raises(errors.DataError, match=r"line 5: class 'Pneumonia'"):
    _listing(download)
  fake.write_csv(str(download / fake.CLASSES_CSV), ["patientId", "class"],
                 classes + [[PID("p02"), fake.NOT_NORMAL]])
  with pytest.raises(errors.DataError, match=rf"{PID('p02')} has two classes, 'Normal' and"):
    _listing(download)


def test_reject_rate_and_options_are_checked_before_work(tmp_path):
  fake.write(str(tmp_path / "download"))
  # p07's missing file: 1 of the 2 validation images, before any image is decoded.
  with pytest.raises(errors.DataError, match=r"1 of 2 images of split 'validation' were rejected"):
    _prepare(tmp_path, max_reject_fraction=0.05)
  with pytest.raises(errors.ConfigError, match=r"rsna_pneumonia has no option \['views'\]"):
    _prepare(tmp_path, options={"views": "all"})
