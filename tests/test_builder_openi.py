"""The openi builder on fake copies of both Open-i forms (tests/fakes/openi.py)."""

import csv
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from clipmed import errors
from clipmed.report import chexpert
from input_pipeline import datasets
from input_pipeline import prepare as prepare_lib
from input_pipeline.builders import base
from input_pipeline.builders import listing
from tests.conftest import prepared_records
from tests.fakes import images as fake_images
from tests.fakes import mimic_cxr as fake_mimic
from tests.fakes import openi as fake

OPTIONS = dict(max_reject_fraction=0.6, vocab_size=200, image_size=64)
# The seeded split (seed 0) of the fixture's report uids, hand-copied from one run: it must not
# change, or every prepared Open-i dataset would change its splits.
NLM_SPLIT = {"validation": {"CXR6", "CXR8"}, "test": {"CXR5", "CXR10"}}  # the other 9: train
KAGGLE_SPLIT = {"validation": {"7", "9"}, "test": {"6", "10"}}


def _prepare(root, form):
  return prepare_lib.prepare("openi", manual_dir=str(root / form),
                             data_dir=str(root / f"tfds_{form}"), options={},
                             progress=False, workers=1, **OPTIONS)




def _listing(manual_dir):
  return datasets.DATASETS["openi"].builder(os.path.join(manual_dir, "tfds"),
                                            image_size=64).list_studies(str(manual_dir))


def _views(found):
  return {ref.image_id: ref.view for studies in found.splits.values() for study in studies
          for ref in study.images}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  root = tmp_path_factory.mktemp("openi")
  fake.write(str(root / "nlm"), form="nlm")
  fake.write(str(root / "kaggle"), form="kaggle")
  return root, {form: _prepare(root, form) for form in ("nlm", "kaggle")}


def test_nlm_counts_and_rejects(prepared):
  _, summaries = prepared
  summary = summaries["nlm"]
  # train: CXR1 (2), CXR2 (2), CXR3 (3), CXR9, CXR11, CXR12; CXR7 missing, CXR13 unreadable;
  # validation: CXR6 frontal (its lateral truncated), CXR8; test: CXR10 (CXR5 empty report).
  assert summary["splits"] == {"train": 10, "validation": 2, "test": 1}
  assert summary["rejected"] == 4 and summary["filtered"] == {}
  with open(summary["rejects_csv"]) as f:
    rejects = {row["study_id"]: row for row in csv.DictReader(f)}
  assert rejects["CXR7"]["reason"] == "file not found"
  assert rejects["CXR7"]["image_id"] == fake.nlm_id(*fake.MISSING)
  assert rejects["CXR6"]["reason"] == "image file is truncated"
  assert rejects["CXR5"]["reason"].startswith("empty report")
  assert rejects["CXR13"]["reason"].startswith("report XML cannot be read")
  assert rejects["CXR13"]["path"].endswith(os.path.join("ecgen-radiology", "13.xml"))


def test_nlm_records_labels_and_reports(prepared):
  _, summaries = prepared
  train = prepared_records(summaries["nlm"], "train")
  row = train["CXR2_IM-0652-1001"]
  assert row["study_id"] == b"CXR2" and row["patient_id"] == b"CXR2"
  assert row["image"].shape == (64, 53, 1) and row["image"].dtype == np.uint8  # 96 x 80 -> 64
  assert row["report"].decode() == ("FINDINGS: Moderate cardiomegaly. Large right pleural "
                                    "effusion.\n\nIMPRESSION: Cardiomegaly and effusion.")
  labels = row["labels"]  # clipmed's labeler on the report
  assert labels[chexpert.INDEX["Cardiomegaly"]] == 1.0
  assert labels[chexpert.INDEX["Pleural Effusion"]] == 1.0
  assert np.isnan(labels[chexpert.INDEX["Edema"]])
  normal = train["CXR1_1_IM-0001-3001"]  # "There are no XXXX of a pleural effusion."
  assert "no XXXX of a pleural effusion" in normal["report"].decode()
  assert "INDICATION" not in normal["report"].decode()
  assert normal["labels"][chexpert.INDEX["Pleural Effusion"]] == 0.0
  assert normal["labels"][chexpert.INDEX["No Finding"]] == 1.0
  assert prepared_records(summaries["nlm"], "test")["CXR10_IM-2055-1001"]["labels"][
      chexpert.INDEX["Support Devices"]] == 1.0
  # The stored pixels are the PNG's, resized (8-bit grey PNGs pass through unchanged).
  expected = Image.fromarray(fake_images.chest_like(96, 80, seed=20)).resize((53, 64))
  corr = np.corrcoef(np.asarray(expected, np.float32).ravel(),
                     row["image"][..., 0].astype(np.float32).ravel())[0, 1]
  assert corr > 0.95


def test_nlm_views_and_seeded_split(prepared):
  _, summaries = prepared
  root = summaries["nlm"]["data_dir"]
  with open(os.path.join(root, base.INDEX_FILE)) as f:
    index = json.load(f)
  views = {i: v for split in index.values() for i, v in zip(split["image_id"], split["view"])}
  # No projection in the XML: the lowest image number of a report is FRONTAL, the rest LATERAL
  # (CXR1 lists -4001 first and is still FRONTAL at -3001: the documented guess).
  assert views["CXR1_1_IM-0001-3001"] == "FRONTAL" and views["CXR1_1_IM-0001-4001"] == "LATERAL"
  assert [views[f"CXR3_IM-1384-{n}"] for n in (1001, 2001, 3001)] == [
      "FRONTAL", "LATERAL", "LATERAL"]
  assert views["CXR9_IM-2054-1001"] == "FRONTAL"
  # The split: seeded 70/15/15 over all 13 report uids (CXR4 without images, CXR13 unreadable).
  uids = [f"CXR{n}" for n in range(1, 14)]
  expected = {u: next((s for s, ids in NLM_SPLIT.items() if u in ids), "train") for u in uids}
  assert listing.seeded_split(uids, seed=0) == expected
  for split, fields in index.items():
    assert {expected[s] for s in fields["study_id"]} == {split}
  with open(os.path.join(root, "metadata.json")) as f:
    meta = json.load(f)
  assert meta["splits"]["validation"]["image_id_sha256"] == base.split_hash(
      ["CXR6_IM-2051-1001", "CXR8_IM-2053-1001"])
  assert meta["splits"]["test"]["image_id_sha256"] == base.split_hash(["CXR10_IM-2055-1001"])
  assert meta["class_names"] == list(chexpert.CATEGORIES)


def test_kaggle_form(prepared):
  _, summaries = prepared
  summary = summaries["kaggle"]
  # train: 1 (2), 2 (2), 3 (3), 8, 11, 12 (5 empty report, 99 without a report row);
  # validation: 9 (7 missing); test: 6 frontal (lateral truncated), 10.
  assert summary["splits"] == {"train": 10, "validation": 1, "test": 2}
  with open(summary["rejects_csv"]) as f:
    reasons = {row["image_id"]: row["reason"] for row in csv.DictReader(f)}
  assert reasons == {
      "5_IM-2050-1001.dcm.png": "empty report (no findings or impression)",
      "99_IM-9999-1001.dcm.png": "uid 99 has no row in indiana_reports.csv",
      "7_IM-2052-1001.dcm.png": "file not found",
      "6_IM-2051-2001.dcm.png": "image file is truncated"}
  train = prepared_records(summary, "train")
  # Views from indiana_projections.csv: CXR1's frontal is -4001.
  assert train["1_IM-0001-4001.dcm.png"]["view"] == b"FRONTAL"
  assert train["1_IM-0001-3001.dcm.png"]["view"] == b"LATERAL"
  row = train["2_IM-0652-2001.dcm.png"]  # a PNG named .dcm.png
  assert row["view"] == b"LATERAL" and row["study_id"] == b"2" and row["patient_id"] == b"2"
  assert row["image"].shape == (64, 53, 1)
  assert row["labels"][chexpert.INDEX["Cardiomegaly"]] == 1.0
  uids = [str(n) for n in range(1, 13)] + ["99"]
  expected = {u: next((s for s, ids in KAGGLE_SPLIT.items() if u in ids), "train") for u in uids}
  assert listing.seeded_split(uids, seed=0) == expected
  assert set(prepared_records(summary, "test")) == {"6_IM-2051-1001.dcm.png", "10_IM-2055-1001.dcm.png"}


def test_nlm_views_from_a_projections_file_and_flat_pngs(tmp_path):
  download = tmp_path / "download"
  fake.write(str(download), form="nlm", projections=True)
  views = _views(_listing(download))
  assert views["CXR1_1_IM-0001-4001"] == "FRONTAL" and views["CXR1_1_IM-0001-3001"] == "LATERAL"
  assert views["CXR3_IM-1384-1001"] == "FRONTAL"
  # NLMCXR_png.tgz unpacked into manual_dir itself (no NLMCXR_png/ folder).
  os.remove(download / "indiana_projections.csv")
  for name in os.listdir(download / "NLMCXR_png"):
    shutil.move(str(download / "NLMCXR_png" / name), str(download / name))
  os.rmdir(download / "NLMCXR_png")
  found = _listing(download)
  assert _views(found)["CXR1_1_IM-0001-3001"] == "FRONTAL"
  assert found.splits["train"][0].images[0].path == str(download / "CXR1_1_IM-0001-3001.png")
  # Both forms in one folder: the NLM release is read, and a note says so.
  fake.write(str(download), form="kaggle")
  found = _listing(download)
  assert found.splits["train"][0].study_id == "CXR1"
  assert any("both forms" in note for note in found.notes)


def test_layout_errors_name_the_expected_files(tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(errors.DataError, match=r"ecgen-radiology/<n>.xml.*indiana_reports.csv") as e:
    _listing(empty)
  assert "\n" not in str(e.value)
  mimic = fake_mimic.write(str(tmp_path / "mimic"))  # another dataset's download
  with pytest.raises(errors.DataError, match=r"no Open-i download.*found \['files', 'mimic"):
    _listing(mimic)
  nlm = tmp_path / "nlm"
  fake.write(str(nlm), form="nlm")
  shutil.rmtree(nlm / "NLMCXR_png")
  with pytest.raises(errors.DataError, match=r"images are missing: expected .*NLMCXR_png/CXR"):
    _listing(nlm)
  kaggle = tmp_path / "kaggle"
  fake.write(str(kaggle), form="kaggle")
  os.remove(kaggle / "indiana_projections.csv")
  with pytest.raises(errors.DataError, match=r"projections file is missing.*indiana_projections"):
    _listing(kaggle)
  fake.write(str(kaggle), form="kaggle")
  shutil.rmtree(kaggle / "images")
  with pytest.raises(errors.DataError, match=r"images/images_normalized.*kaggle.com"):
    _listing(kaggle)
  with pytest.raises(errors.ConfigError, match="openi has no option"):
    _prepare_with(tmp_path, views="all")


def _prepare_with(tmp_path, **options):
  return prepare_lib.prepare("openi", manual_dir=str(tmp_path / "kaggle"),
                             data_dir=str(tmp_path / "tfds"), options=options, progress=False,
                             **OPTIONS)
