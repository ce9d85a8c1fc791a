"""The chexpert_plus builder on fakes of the official layout (tests/fakes/chexpert_plus.py)."""

import csv
import json
import os
import shutil
import zipfile

import numpy as np
from PIL import Image
import pytest

from clipmed import errors
from clipmed.report import chexpert
from input_pipeline import datasets
from input_pipeline import prepare as prepare_lib
from input_pipeline.builders import base
from tests.conftest import prepared_records
from tests.fakes import chexpert_plus as fake

OPTIONS = dict(max_reject_fraction=0.5, vocab_size=200, image_size=64)
NAN = float("nan")


def _prepare(manual_dir, data_dir, options=None, **kwargs):
  return prepare_lib.prepare("chexpert_plus", manual_dir=str(manual_dir), data_dir=str(data_dir),
                             options=options or {}, progress=False, **{**OPTIONS, **kwargs})




def _listing(manual_dir, seed=0, **options):
  builder = datasets.DATASETS["chexpert_plus"].builder("/nonexistent", options=options, seed=seed)
  return builder.list_studies(str(manual_dir))


def _labels(values):
  out = np.full(len(chexpert.CATEGORIES), np.nan, np.float32)
  for name, value in values.items():
    out[chexpert.INDEX[name]] = value
  return out


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  tmp_path = tmp_path_factory.mktemp("chexpert_plus")
  fake.write(str(tmp_path / "png"), form="png")
  return tmp_path, _prepare(tmp_path / "png", tmp_path / "tfds")


def test_counts_and_rejects(prepared):
  _, summary = prepared
  # train: p1/s1 (2 views), p1/s2, p2, p3, p7; rejected p4 (truncated), p5 (missing), p6 (empty
  # report); validation: p8 (the seeded 5%, at least one patient); test: the official valid rows.
  assert summary["splits"] == {"train": 6, "validation": 1, "test": 3}
  assert summary["rejected"] == 3 and summary["filtered"] == {}
  with open(summary["rejects_csv"]) as f:
    rejects = {row["image_id"]: row for row in csv.DictReader(f)}
  assert set(rejects) == {fake.TRUNCATED, fake.MISSING, fake.EMPTY_REPORT}
  assert rejects[fake.TRUNCATED]["reason"] == "image file is truncated"
  assert rejects[fake.MISSING]["reason"] == "file not found"
  assert rejects[fake.MISSING]["path"].endswith("PNG/train/patient00005/study1/view1_frontal.png")
  assert rejects[fake.EMPTY_REPORT]["reason"].startswith("empty report")
  assert rejects[fake.EMPTY_REPORT]["study_id"] == "patient00006/study1"


def test_records_labels_reports_and_views(prepared):
  _, summary = prepared
  train = prepared_records(summary, "train")
  row = train["train/patient00001/study1/view1_frontal.jpg"]
  assert row["study_id"].decode() == "patient00001/study1"
  assert row["patient_id"].decode() == "patient00001"
  # CheXbert (report_fixed.json): Cardiomegaly 1, Pleural Effusion 1, the rest null.
  np.testing.assert_array_equal(row["labels"], _labels({"Cardiomegaly": 1, "Pleural Effusion": 1}))
  np.testing.assert_array_equal(
      train["train/patient00002/study1/view1_frontal.jpg"]["labels"],
      _labels({"Consolidation": 1, "Pneumonia": -1, "Pneumothorax": 0}))
  assert row["findings"].decode() == "Moderate cardiomegaly. Small left pleural effusion."
  assert row["report"].decode() == ("FINDINGS: Moderate cardiomegaly. Small left pleural "
                                    "effusion.\n\nIMPRESSION: Cardiomegaly and effusion.")
  # Quoted CRLF inside a section cell -> one line break.
  assert (train["train/patient00007/study1/view1_frontal.jpg"]["findings"].decode()
          == "Bibasilar atelectasis.\nNo effusion.")
  # Empty section columns: the FINDINGS / IMPRESSION of the report text.
  fallback = train["train/patient00001/study2/view1_frontal.jpg"]
  assert fallback["findings"].decode() == "The lungs are clear."
  assert fallback["impression"].decode() == "No acute cardiopulmonary process."
  assert "NARRATIVE" not in fallback["report"].decode()
  views = {key: r["view"].decode() for key, r in train.items()}
  assert views["train/patient00001/study1/view1_frontal.jpg"] == "PA"
  assert views["train/patient00001/study1/view2_lateral.jpg"] == "LATERAL"
  assert views["train/patient00001/study2/view1_frontal.jpg"] == "AP"
  assert views["train/patient00002/study1/view1_frontal.jpg"] == "FRONTAL"  # ap_pa blank
  test = prepared_records(summary, "test")
  assert test["valid/patient64541/study1/view2_lateral.jpg"]["view"].decode() == "LL"
  assert test["valid/patient64541/study1/view1_frontal.jpg"]["study_id"].decode() == (
      "patient64541/study1")


def _expected(values: np.ndarray) -> np.ndarray:
  """What the shared pixel handling should make of the fake's [96, 80] pixels at 64 px: 8-bit as
  stored, 16-bit min-max scaled."""
  values = values.astype(np.float32)
  unit = (values / 255 if values.max() <= 255 else
          (values - values.min()) / (values.max() - values.min()))
  small = Image.fromarray(unit.astype(np.float32)).resize((53, 64), Image.Resampling.LANCZOS)
  return np.clip(np.asarray(small) * 255, 0, 255)


def test_16bit_and_rgba_pngs_keep_bone_bright(prepared):
  _, summary = prepared
  train = prepared_records(summary, "train")
  for image_id, bits in ((fake.PNG16, 16), (fake.RGBA, 8)):
    image = train[image_id]["image"]
    assert image.shape == (64, 53, 1) and image.dtype == np.uint8
    expected = _expected(fake.pixels(image_id, bits=bits))
    got = image[..., 0].astype(np.float32)
    assert np.abs(got - expected).mean() < 4, image_id
    assert np.abs(got - (255 - expected)).mean() > 60  # not inverted
    assert got[3:6, 3:5].mean() > 200  # the burned-in marker, top left, stays white


def test_splits_and_hashes(prepared, tmp_path):
  _, summary = prepared
  with open(os.path.join(summary["data_dir"], "metadata.json")) as f:
    meta = json.load(f)
  expected = {
      "train": ["train/patient00001/study1/view1_frontal.jpg",
                "train/patient00001/study1/view2_lateral.jpg",
                "train/patient00001/study2/view1_frontal.jpg",
                "train/patient00002/study1/view1_frontal.jpg",
                "train/patient00003/study1/view1_frontal.jpg",
                "train/patient00007/study1/view1_frontal.jpg"],
      "validation": ["train/patient00008/study1/view1_frontal.jpg"],
      "test": ["valid/patient64541/study1/view1_frontal.jpg",
               "valid/patient64541/study1/view2_lateral.jpg",
               "valid/patient64542/study1/view1_frontal.jpg"]}
  for split, ids in expected.items():
    assert meta["splits"][split]["image_id_sha256"] == base.split_hash(ids), split
  assert meta["class_names"] == list(chexpert.CATEGORIES)
  # The validation patients are a function of the seed (and of the train patients only).
  root = tmp_path / "png"
  fake.write(str(root), form="png")
  for seed, patient in ((0, "patient00008"), (3, "patient00001")):
    found = _listing(root, seed=seed)
    assert {s.patient_id for s in found.splits["validation"]} == {patient}
    assert patient not in {s.patient_id for s in found.splits["train"]}


def test_jpeg_form_with_chexpert_labels(prepared, tmp_path):
  _, png_summary = prepared
  fake.write(str(tmp_path / "jpg"), form="jpg")
  summary = _prepare(tmp_path / "jpg", tmp_path / "tfds")
  assert summary["splits"] == png_summary["splits"]
  assert summary["config"] == png_summary["config"]
  png, jpg = prepared_records(png_summary, "train"), prepared_records(summary, "train")
  assert set(png) == set(jpg)
  # CheXpert-v1.0/train.csv, joined on patientN/studyN/viewN: Pleural Effusion is -1 there.
  np.testing.assert_array_equal(jpg["train/patient00001/study1/view1_frontal.jpg"]["labels"],
                                _labels({"Cardiomegaly": 1, "Pleural Effusion": -1}))
  key = "train/patient00003/study1/view1_frontal.jpg"
  diff = np.abs(png[key]["image"].astype(np.float32) - jpg[key]["image"].astype(np.float32))
  assert diff.mean() < 3  # same pixels, PNG vs JPEG


def test_label_sources(tmp_path):
  root = tmp_path / "png"
  fake.write(str(root), form="png")
  key = "train/patient00001/study1/view1_frontal.jpg"

  def labels_of(found):
    return {ref.image_id: s.labels for split in found.splits.values() for s in split
            for ref in s.images}

  found = _listing(root, labels="labeler")
  assert found.notes[0] == "labels: clipmed's labeler (--labels=labeler)"
  assert all(v is None for v in labels_of(found).values())
  # chexbert_labels.zip, as distributed, instead of the unzipped folder.
  with zipfile.ZipFile(root / "chexbert_labels.zip", "w") as z:
    z.write(root / "chexbert_labels" / "report_fixed.json", "chexbert_labels/report_fixed.json")
  shutil.rmtree(root / "chexbert_labels")
  found = _listing(root)
  assert found.notes[0].startswith("labels: CheXbert") and "chexbert_labels.zip" in found.notes[0]
  np.testing.assert_array_equal(labels_of(found)[key],
                                _labels({"Cardiomegaly": 1, "Pleural Effusion": 1}))
  os.remove(root / "chexbert_labels.zip")
  found = _listing(root)
  assert found.notes[0].startswith("labels: clipmed's labeler (no chexbert_labels")
  assert labels_of(found)[key] is None
  os.makedirs(root / "chexbert_labels")
  with open(root / "chexbert_labels" / "report_fixed.json", "w") as f:
    f.write(json.dumps({"path_to_image": key, **{c: None for c in chexpert.CATEGORIES}}) + "\n")
    f.write(json.dumps({"path_to_image": key, "Cardiomegaly": 2.0}) + "\n")
  with pytest.raises(errors.DataError, match=r"report_fixed.json, line 2: no No Finding"):
    _listing(root)


def test_layout_and_option_errors(tmp_path):
  root = tmp_path / "png"
  fake.write(str(root), form="png")
  with pytest.raises(errors.ConfigError, match="labels"):
    _prepare(root, tmp_path / "tfds", options=dict(labels="radiologist"))
  with pytest.raises(errors.ConfigError, match=r"no option \['five_by_200'\]"):
    _prepare(root, tmp_path / "tfds", options=dict(five_by_200="x.csv"))
  shutil.move(root / "PNG", tmp_path / "elsewhere")
  with pytest.raises(errors.DataError, match=r"images are missing: expected .*PNG/train/"
                     r".*aimi.stanford.edu") as info:
    _listing(root)
  assert "\n" not in str(info.value)
  os.remove(root / "df_chexpert_plus_240401.csv")
  with pytest.raises(errors.DataError, match=r"index file is missing: expected .*"
                     r"df_chexpert_plus_240401.csv.*aimi.stanford.edu"):
    _prepare(root, tmp_path / "tfds")
  with open(root / "df_chexpert_plus_240401.csv", "w") as f:
    f.write("path_to_image,report,split\ntrain/patient1/study1/view1_frontal.jpg,x,train\n")
  with pytest.raises(errors.DataError, match=r"has no column 'frontal_lateral'"):
    _listing(root)
