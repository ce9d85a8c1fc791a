"""The siim_pneumothorax builder on a fake copy of the official layout
(tests/fakes/siim_pneumothorax.py)."""

import csv
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from clipmed import errors
from input_pipeline import datasets
from input_pipeline import prepare as prepare_lib
from input_pipeline.builders import base
from tests.conftest import prepared_records
from tests.fakes import images as fake_images
from tests.fakes import rsna_pneumonia as fake_rsna
from tests.fakes import siim_pneumothorax as fake

OPTIONS = dict(max_reject_fraction=0.5, image_size=64)
IID = fake.image_id
# The seeded patient-level split of the fixture (seed 0) over the PatientIDs of the 11 DICOMs
# listed in train-rle.csv (10 patients; i01 and i02 are patient A), fixed on purpose.
SPLIT = {"train": ["i04", "i05", "i07", "i08", "i09", "i10", "i12"],
         "validation": ["i01", "i02", "i11"], "test": ["i03"]}


def _prepare(tmp_path, name="tfds", options=None, **kwargs):
  return prepare_lib.prepare("siim_pneumothorax", manual_dir=str(tmp_path / "download"),
                             data_dir=str(tmp_path / name), options=options or {},
                             progress=False, **{**OPTIONS, **kwargs})




def _listing(download, seed=0):
  builder = datasets.DATASETS["siim_pneumothorax"].builder(str(download) + "_tfds", seed=seed)
  return builder.list_studies(str(download))


def _summary_of(found):
  """split -> [(short name, label, view)] of a listing, in listing order."""
  names = {IID(image[0]): image[0] for image in fake.IMAGES}
  return {split: [(names[s.images[0].image_id], float(s.labels[0]), s.images[0].view)
                  for s in studies] for split, studies in found.splits.items()}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  tmp_path = tmp_path_factory.mktemp("siim")
  fake.write(str(tmp_path / "download"))
  return tmp_path, _prepare(tmp_path, workers=1)


def test_counts_rejects_and_filtered(prepared):
  _, summary = prepared
  assert summary["splits"] == {"train": 6, "validation": 3, "test": 1}  # i05 truncated
  assert summary["rejected"] == 2
  assert summary["filtered"] == {"not in train-rle.csv": 1}
  with open(summary["rejects_csv"]) as f:
    rejects = {row["image_id"]: row for row in csv.DictReader(f)}
  assert set(rejects) == {IID(fake.TRUNCATED), IID(fake.MISSING)}
  missing = rejects[IID(fake.MISSING)]
  assert missing["reason"] == "file not found" and missing["split"] == "train"
  assert missing["path"].endswith(f"dicom-images-train/*/*/{IID(fake.MISSING)}.dcm")
  truncated = rejects[IID(fake.TRUNCATED)]
  assert truncated["reason"].startswith("DICOM file is truncated")
  assert truncated["split"] == "train" and truncated["study_id"] == fake.study_id(fake.TRUNCATED)


def test_labels_views_and_ids(prepared):
  _, summary = prepared
  validation, train = prepared_records(summary, "validation"), prepared_records(summary, "train")
  two_masks = validation[IID(fake.TWO_MASKS)]  # two RLE rows -> one example, positive
  np.testing.assert_array_equal(two_masks["labels"], np.float32([1]))
  np.testing.assert_array_equal(validation[IID("i02")]["labels"], np.float32([0]))  # " -1"
  np.testing.assert_array_equal(prepared_records(summary, "test")[IID("i03")]["labels"],
                                np.float32([0]))  # "-1"
  np.testing.assert_array_equal(train[IID("i10")]["labels"], np.float32([1]))
  assert two_masks["study_id"].decode() == fake.study_id(fake.TWO_MASKS)
  assert (two_masks["patient_id"].decode() == validation[IID("i02")]["patient_id"].decode()
          == fake.patient_id("A"))  # PatientID from the header; one patient, one split
  assert two_masks["view"].decode() == "PA" and train[IID("i10")]["view"].decode() == "AP"
  assert train[IID(fake.BLANK_VIEW)]["view"].decode() == "FRONTAL"
  assert two_masks["image"].shape == (64, 53, 1) and two_masks["image"].dtype == np.uint8


def test_splits_are_seeded_by_patient_and_hashed(prepared):
  _, summary = prepared
  with open(os.path.join(summary["data_dir"], "metadata.json")) as f:
    meta = json.load(f)
  assert meta["class_names"] == ["Pneumothorax"]
  for split, names in SPLIT.items():
    kept = [IID(n) for n in names if n != fake.TRUNCATED]
    assert set(prepared_records(summary, split)) == set(kept), split
    assert meta["splits"][split]["image_id_sha256"] == base.split_hash(kept)


def test_pixels_of_jpeg_baseline_and_monochrome1_dicoms(prepared):
  _, summary = prepared
  train = prepared_records(summary, "train")
  k = [image[0] for image in fake.IMAGES].index("i08")
  source = Image.fromarray(fake_images.chest_like(96, 80, seed=k)).resize((53, 64),
                                                                          Image.Resampling.LANCZOS)
  got = train[IID("i08")]["image"][..., 0].astype(int)
  assert np.abs(got - np.asarray(source, int)).mean() < 4
  mono1 = train[IID(fake.MONO1)]["image"][..., 0].astype(int)  # stored inverted, 16-bit
  assert mono1[3:6, 3:5].mean() > 200              # the burned-in marker is white
  assert mono1[20:40, 24:29].mean() > mono1[20:40, 8:14].mean() + 50  # mediastinum > lung


def test_header_forms_seeds_and_bad_cells(tmp_path):
  download = tmp_path / "download"
  fake.write(str(download), header_space=False)
  listed = _summary_of(_listing(download))
  assert {split: sorted(n for n, _, _ in rows) for split, rows in listed.items()} == {
      split: names for split, names in SPLIT.items()}
  assert ("i07", 1.0, "FRONTAL") in listed["train"] and ("i03", 0.0, "AP") in listed["test"]
  assert _summary_of(_listing(download, seed=1)) != listed
  fake.write(str(download))  # with the space: the same listing
  assert _summary_of(_listing(download)) == listed
  with open(download / fake.RLE_CSV, "a", encoding="utf-8") as f:
    f.write(f"{IID('i03')}, 12 x\n")
  with pytest.raises(errors.DataError, match=r"train-rle.csv, line 15: .*'12 x'"):
    _listing(download)


def test_layout_errors(tmp_path):
  download = tmp_path / "download"
  fake.write(str(download))
  os.remove(download / fake.RLE_CSV)
  with pytest.raises(errors.DataError, match=r"expected .*train-rle.csv; found .*kaggle.com") as e:
    _listing(download)
  assert "\n" not in str(e.value)
  other = tmp_path / "rsna"  # the manual_dir of another dataset
  fake_rsna.write(str(other))
  with pytest.raises(errors.DataError, match=r"expected .*train-rle.csv; found .*stage_2"):
    _listing(other)
  fake.write(str(download))
  shutil.rmtree(download / "dicom-images-train")
  os.makedirs(download / "dicom-images-train")
  with pytest.raises(errors.DataError, match=r"no .dcm file under .*dicom-images-train"):
    _listing(download)


def test_reject_rate_and_options_are_checked_before_work(tmp_path):
  fake.write(str(tmp_path / "download"))
  # i06's missing DICOM: 1 of the 8 train images, before any image is decoded.
  with pytest.raises(errors.DataError, match=r"1 of 8 images of split 'train' were rejected"):
    _prepare(tmp_path, max_reject_fraction=0.05)
  with pytest.raises(errors.ConfigError, match=r"siim_pneumothorax has no option \['labels'\]"):
    _prepare(tmp_path, options={"labels": "labeler"})
