"""The chexpert builder on a fake copy of CheXpert-v1.0-small (tests/fakes/chexpert.py)."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from clipmed import errors
from clipmed.report import chexpert
from input_pipeline import datasets
from input_pipeline import prepare as prepare_lib
from input_pipeline.builders import base
from input_pipeline.builders import chexpert as builder_lib
from tests.conftest import ROOT, prepared_records
from tests.fakes import chexpert as fake

OPTIONS = dict(max_reject_fraction=0.5, image_size=64)
FIVE = [chexpert.INDEX[name] for name in builder_lib.FIVE_CLASSES]


def _prepare(manual_dir, data_dir, options=None, **kwargs):
  return prepare_lib.prepare("chexpert", manual_dir=str(manual_dir), data_dir=str(data_dir),
                             options=options or {}, progress=False, **{**OPTIONS, **kwargs})




def _listing(manual_dir, seed=0, **options):
  builder = datasets.DATASETS["chexpert"].builder("/nonexistent", options=options, seed=seed)
  return builder.list_studies(str(manual_dir))


def _ids(found, split):
  return [ref.image_id for study in found.splits[split] for ref in study.images]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  tmp_path = tmp_path_factory.mktemp("chexpert")
  fake.write(str(tmp_path / "download"))
  return tmp_path, _prepare(tmp_path / "download", tmp_path / "tfds")


def test_counts_rejects_and_filtered(prepared):
  _, summary = prepared
  # train: 17 rows - 9 test_5x200 images - 1 lateral of a test_5x200 study = 7, of which the
  # truncated and the missing JPEG are rejected.
  assert summary["splits"] == {"train": 5, "validation": 3, "test_5x200": 9}
  assert summary["rejected"] == 2
  assert summary["filtered"] == {"other image of a test_5x200 study (kept out of train)": 1}
  with open(summary["rejects_csv"]) as f:
    rejects = {row["image_id"]: row for row in csv.DictReader(f)}
  assert rejects[fake.path(fake.TRUNCATED)]["reason"] == "image file is truncated"
  assert rejects[fake.path(fake.MISSING)]["reason"] == "file not found"
  assert rejects[fake.path(fake.MISSING)]["split"] == "train"


def test_five_by_200_rule_and_no_leak(prepared):
  _, summary = prepared
  test, train = prepared_records(summary, "test_5x200"), prepared_records(summary, "train")
  expected = {fake.path(p) for paths in fake.FIVE_BY_200.values() for p in paths}
  assert set(test) == expected  # every qualifying image (fewer than 200 per class here)
  assert not set(train) & expected and fake.path(fake.COMPANION) not in train
  for row in test.values():
    five = row["labels"][FIVE]
    assert (five == 1).sum() == 1 and not (five == -1).any(), row["image_id"]
    assert row["view"].decode() in ("AP", "PA", "FRONTAL")
  assert set(train) == {fake.path(p) for p in (
      "train/patient00003/study1/view1_frontal.jpg",    # two of the five positive
      "train/patient00004/study1/view1_frontal.jpg",    # Edema uncertain
      "train/patient00005/study1/view1_lateral.jpg",    # lateral
      "train/patient00008/study1/view1_frontal.jpg",    # uncertain only
      "train/patient00012/study1/view1_frontal.jpg")}   # none of the five


def test_labels_views_images_and_hashes(prepared):
  _, summary = prepared
  train, valid = prepared_records(summary, "train"), prepared_records(summary, "validation")
  row = train[fake.path("train/patient00004/study1/view1_frontal.jpg")]
  labels = row["labels"]  # the CSV's columns, in clipmed's category order
  assert labels[chexpert.INDEX["Atelectasis"]] == 1 and labels[chexpert.INDEX["Edema"]] == -1
  assert np.isnan(np.delete(labels, [chexpert.INDEX["Atelectasis"],
                                     chexpert.INDEX["Edema"]])).all()
  assert row["study_id"].decode() == "patient00004/study1"
  assert row["patient_id"].decode() == "patient00004"
  assert row["image"].shape == (64, 53, 1) and row["image"].dtype == np.uint8
  assert row["image"][3:6, 3:5].mean() > 200  # the burned-in marker, top left
  frontal = valid[fake.path("valid/patient64541/study1/view1_frontal.jpg")]
  expected = np.zeros(14, np.float32)
  expected[[chexpert.INDEX["Cardiomegaly"], chexpert.INDEX["Edema"]]] = 1
  np.testing.assert_array_equal(frontal["labels"], expected)  # radiologists': complete 0/1
  views = {key: r["view"].decode() for key, r in {**train, **valid}.items()}
  assert views[fake.path("valid/patient64541/study1/view1_frontal.jpg")] == "AP"
  assert views[fake.path("valid/patient64541/study1/view2_lateral.jpg")] == "LL"
  assert views[fake.path("valid/patient64542/study1/view1_frontal.jpg")] == "PA"
  assert views[fake.path("train/patient00005/study1/view1_lateral.jpg")] == "LATERAL"
  assert views[fake.path("train/patient00012/study1/view1_frontal.jpg")] == "FRONTAL"
  with open(os.path.join(summary["data_dir"], "metadata.json")) as f:
    meta = json.load(f)
  assert meta["splits"]["validation"]["image_id_sha256"] == base.split_hash(
      [fake.path(p) for p, *_ in fake.VALID])
  assert meta["splits"]["test_5x200"]["image_id_sha256"] == base.split_hash(
      [fake.path(p) for paths in fake.FIVE_BY_200.values() for p in paths])
  assert meta["class_names"] == list(chexpert.CATEGORIES)


def test_manual_dir_may_be_the_folder_holding_train_csv(prepared):
  tmp_path, summary = prepared
  again = _prepare(tmp_path / "download" / fake.TOP, tmp_path / "tfds_top")
  assert again["splits"] == summary["splits"] and again["config"] == summary["config"]
  for split in summary["splits"]:
    assert set(prepared_records(again, split)) == set(prepared_records(summary, split))


def test_draw_is_seeded(prepared, monkeypatch):
  tmp_path, _ = prepared
  monkeypatch.setattr(builder_lib, "PER_CLASS", 1)
  seed0, seed1 = _listing(tmp_path / "download", seed=0), _listing(tmp_path / "download", seed=1)
  assert _ids(seed0, "test_5x200") == _ids(_listing(tmp_path / "download", seed=0), "test_5x200")
  expected = {0: ["train/patient00002/study1/view1_frontal.jpg",
                  "train/patient00007/study1/view1_frontal.jpg",
                  "train/patient00009/study2/view1_frontal.jpg",
                  "train/patient00010/study1/view1_frontal.jpg",
                  "train/patient00011/study1/view1_frontal.jpg"],
              1: ["train/patient00001/study1/view1_frontal.jpg",
                  "train/patient00007/study1/view1_frontal.jpg",
                  "train/patient00009/study2/view1_frontal.jpg",
                  "train/patient00010/study1/view1_frontal.jpg",
                  "train/patient00011/study1/view2_frontal.jpg"]}
  for seed, found in ((0, seed0), (1, seed1)):
    assert sorted(_ids(found, "test_5x200")) == [fake.path(p) for p in expected[seed]]
    # One per class, and the unchosen candidates stay in train unless their study was chosen.
    assert not set(_ids(found, "train")) & set(_ids(found, "test_5x200"))
  train0 = _ids(seed0, "train")
  assert fake.path("train/patient00001/study1/view1_frontal.jpg") in train0
  assert fake.path(fake.COMPANION) in train0  # its study's frontal image was not drawn
  # Drawn from the same study as a chosen image: stays out of train with it.
  assert fake.path("train/patient00011/study1/view2_frontal.jpg") not in train0
  assert "fewer than 1" not in " ".join(seed0.notes)


def test_user_five_by_200_list(prepared, tmp_path):
  root = prepared[0] / "download"
  chosen = ["train/patient00002/study1/view1_frontal.jpg",
            "train/patient00010/study1/view1_frontal.jpg"]
  listed = fake.write_five_by_200(str(tmp_path / "5x200.csv"), chosen)
  found = _listing(root, five_by_200=listed)
  assert _ids(found, "test_5x200") == [fake.path(p) for p in chosen]
  assert fake.path("train/patient00001/study1/view1_frontal.jpg") in _ids(found, "train")
  assert not set(_ids(found, "train")) & set(_ids(found, "test_5x200"))
  assert any(note.endswith("1 Atelectasis, 0 Cardiomegaly, 0 Consolidation, 1 Edema, "
                           "0 Pleural Effusion") for note in found.notes)
  bad = {"valid/patient64542/study1/view1_frontal.jpg": r"line 3: .* is not an image of .*train",
         "train/patient00003/study1/view1_frontal.jpg": r"line 3: .*positive for 2 of",
         "train/patient00004/study1/view1_frontal.jpg": r"line 3: .*uncertain \(-1.0\) for Edema",
         "train/patient00005/study1/view1_lateral.jpg": r"line 3: .*LATERAL, not frontal",
         chosen[0]: r"line 3: .* is listed twice"}
  for path, message in bad.items():
    listed = fake.write_five_by_200(str(tmp_path / "bad.csv"), [chosen[0], path])
    with pytest.raises(errors.DataError, match=message) as info:
      _listing(root, five_by_200=listed)
    assert "\n" not in str(info.value)
  with pytest.raises(errors.FileError, match="--five_by_200=nothing.csv is not a file"):
    _listing(root, five_by_200="nothing.csv")


def test_layout_and_option_errors(tmp_path):
  with pytest.raises(errors.DataError, match=r"train.csv is missing: expected .*/train.csv "
                     r"\(or CheXpert-v1.0/train.csv, CheXpert-v1.0-small/train.csv\).*"
                     r"stanfordmlgroup.github.io"):
    other = tmp_path / "other"  # e.g. a CheXpert Plus or MIMIC folder
    other.mkdir()
    (other / "df_chexpert_plus_240401.csv").write_text("path_to_image\n")
    _prepare(other, tmp_path / "tfds")
  top = fake.write(str(tmp_path / "download"))
  os.remove(os.path.join(top, "valid.csv"))
  with pytest.raises(errors.DataError, match=r"valid.csv is missing: expected .*"
                     r"CheXpert-v1.0-small/valid.csv"):
    _listing(tmp_path / "download")
  with pytest.raises(errors.ConfigError, match=r"chexpert has no option \['labels'\]"):
    _prepare(tmp_path / "download", tmp_path / "tfds", options=dict(labels="labeler"))
  with open(os.path.join(top, "valid.csv"), "w") as f:
    f.write("Path,Frontal/Lateral,AP/PA," + ",".join(fake.LABEL_COLUMNS) + "\n")
    f.write("CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg,Frontal,AP,"
            + ",".join(["2.0"] + ["0.0"] * 13) + "\n")
  with pytest.raises(errors.DataError, match=r"valid.csv, line 2: label '2.0'"):
    _listing(tmp_path / "download")


def test_cli_takes_the_five_by_200_flag(prepared, tmp_path):
  root = prepared[0] / "download"
  listed = fake.write_five_by_200(str(tmp_path / "5x200.csv"),
                                  ["train/patient00007/study1/view1_frontal.jpg"])
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [sys.executable, "-m", "input_pipeline.prepare", "--dataset=chexpert",
       f"--manual_dir={root}", f"--data_dir={tmp_path / 'tfds'}", "--image_size=64",
       "--max_reject_fraction=0.5", "--workers=1", f"--five_by_200={listed}"],
      capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = json.loads(proc.stdout.strip().splitlines()[-1])
  assert summary["splits"]["test_5x200"] == 1 and summary["config"] != "s64"
