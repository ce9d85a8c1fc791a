"""The vindr_cxr builder on a fake copy of the PhysioNet layout (tests/fakes/vindr_cxr.py)."""

import csv
import json
import os

import numpy as np
from PIL import Image
import pytest

from clipmed import errors
from input_pipeline import prepare as prepare_lib
from input_pipeline.builders import base
from input_pipeline.builders import vindr_cxr
from tests.conftest import prepared_records
from tests.fakes import cxr14 as fake_cxr14
from tests.fakes import images as fake_images
from tests.fakes import vindr_cxr as fake

OPTIONS = dict(max_reject_fraction=0.5, image_size=64)
ID = fake.image_id
CLASS = {name: k for k, name in enumerate(vindr_cxr.CLASS_NAMES)}


def _prepare(tmp_path, name="tfds", download="download", options=None, **kwargs):
  return prepare_lib.prepare("vindr_cxr", manual_dir=str(tmp_path / download),
                             data_dir=str(tmp_path / name), options=options or {},
                             progress=False, **{**OPTIONS, **kwargs})


def _builder(data_dir, **kwargs):
  from input_pipeline import datasets  # pylint: disable=g-import-not-at-top
  return datasets.DATASETS["vindr_cxr"].builder(str(data_dir), image_size=OPTIONS["image_size"],
                                                **kwargs)




@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  tmp_path = tmp_path_factory.mktemp("vindr")
  fake.write(str(tmp_path / "download"))
  return tmp_path, _prepare(tmp_path, workers=2)


def test_counts_rejects_and_filtered(prepared):
  _, summary = prepared
  # train: t0 t1 t3 t4 t5 t6 t9 (t7 truncated, t8 missing); validation: t2; test: s0 s1 s2.
  assert summary["splits"] == {"train": 7, "validation": 1, "test": 3}
  assert summary["rejected"] == 2
  assert summary["filtered"] == {
      "test/*.dicom not listed in annotations/image_labels_test.csv": 1}  # s9
  with open(summary["rejects_csv"]) as f:
    rejects = {row["image_id"]: row for row in csv.DictReader(f)}
  assert set(rejects) == {ID(fake.TRUNCATED), ID(fake.MISSING)}
  assert rejects[ID(fake.TRUNCATED)]["reason"].startswith("DICOM file is truncated")
  assert rejects[ID(fake.MISSING)]["reason"] == "file not found"
  assert rejects[ID(fake.MISSING)]["split"] == "train"
  assert rejects[ID(fake.MISSING)]["path"].endswith(f"train/{ID(fake.MISSING)}.dicom")


def test_labels_are_the_readers_majority_and_the_test_consensus(prepared):
  _, summary = prepared
  rows = {**prepared_records(summary, "train"), **prepared_records(summary, "validation"),
          **prepared_records(summary, "test")}
  shorts = {ID(s): s for s, _ in fake.TRAIN + fake.TEST}
  for image_id, row in rows.items():
    assert row["labels"].dtype == np.float32 and row["labels"].shape == (28,)
    np.testing.assert_array_equal(row["labels"], fake.expected_labels(shorts[image_id]))

  def positives(short):
    return {name for name, k in CLASS.items() if rows[ID(short)]["labels"][k] == 1.0}
  # Hand-checked: 2 of 3 readers -> 1, 1 of 3 -> 0; 1 of 2 -> 0, 2 of 2 -> 1; 1 of 1 -> 1.
  assert positives("t0") == {"Cardiomegaly"}
  assert positives("t2") == {"Pleural effusion", "Pneumonia"}
  assert positives("t3") == {"Other diseases"}
  assert positives("t4") == {"Tuberculosis"}
  assert positives("t5") == positives("t9") == {"No finding"}
  # Test: the consensus row as is; its "Other disease" column is "Other diseases".
  assert positives("s0") == {"Lung Opacity", "Other diseases"}
  assert positives("s1") == {"No finding"}


def test_splits_ids_views_and_hashes(prepared):
  _, summary = prepared
  with open(os.path.join(summary["data_dir"], base.INDEX_FILE)) as f:
    index = json.load(f)
  assert sorted(index["validation"]["image_id"]) == [ID("t2")]
  assert sorted(index["train"]["image_id"]) == sorted(
      ID(s) for s in ("t0", "t1", "t3", "t4", "t5", "t6", "t9"))
  assert sorted(index["test"]["image_id"]) == sorted(ID(s) for s in ("s0", "s1", "s2"))
  for fields in index.values():
    assert fields["study_id"] == fields["image_id"] and set(fields["patient_id"]) == {""}
  view = {i: v for fields in index.values() for i, v in zip(fields["image_id"], fields["view"])}
  assert view[ID("t1")] == "FRONTAL"  # blank ViewPosition
  assert view[ID("s1")] == "FRONTAL"  # no ViewPosition element
  assert view[ID("s2")] == "AP" and view[ID("t0")] == "PA"
  with open(os.path.join(summary["data_dir"], "metadata.json")) as f:
    meta = json.load(f)
  for split, fields in index.items():
    assert meta["splits"][split]["image_id_sha256"] == base.split_hash(fields["image_id"])
  assert meta["splits"]["validation"]["image_id_sha256"] == base.split_hash([ID("t2")])
  assert meta["class_names"] == list(vindr_cxr.CLASS_NAMES)


def test_seed_moves_the_validation_images_not_the_test_images(prepared, tmp_path):
  download, _ = prepared
  found = _builder(tmp_path, seed=1).list_studies(str(download / "download"))
  assert [s.study_id for s in found.splits["validation"]] == [ID(fake.TRUNCATED)]
  assert len(found.splits["train"]) == 8  # t8 is missing: a reject, not a study
  assert [s.study_id for s in found.splits["test"]] == sorted(ID(s) for s in ("s0", "s1", "s2"))


def test_images_monochrome1_comes_out_bone_bright(prepared):
  _, summary = prepared
  test = prepared_records(summary, "test")
  row = test[ID(fake.MONOCHROME1)]
  image = row["image"][..., 0]  # 96 x 80 -> 64 x 53
  assert row["image"].shape == (64, 53, 1) and row["image"].dtype == np.uint8
  seed = len(fake.TRAIN) + [s for s, _ in fake.TEST].index(fake.MONOCHROME1)
  expected = np.asarray(Image.fromarray(fake_images.chest_like(96, 80, seed=seed)).resize(
      (53, 64), Image.Resampling.LANCZOS), np.float32)  # bone bright
  assert np.corrcoef(image.ravel(), expected.ravel())[0, 1] > 0.95
  assert image[3:6, 3:5].min() > 200  # the burned-in marker: white in the stored MONOCHROME2
  for row in test.values():
    assert row["image"].shape == (64, 53, 1)


def test_same_download_prepares_to_the_sameprepared_records(prepared, tmp_path):
  _, summary = prepared
  again = _prepare(tmp_path, download=prepared[0] / "download", workers=1)
  assert again["splits"] == summary["splits"]
  for split in summary["splits"]:
    a, b = prepared_records(summary, split), prepared_records(again, split)
    assert set(a) == set(b)
    for key in a:
      np.testing.assert_array_equal(a[key]["image"], b[key]["image"])
      np.testing.assert_array_equal(a[key]["labels"], b[key]["labels"])
      assert a[key]["view"] == b[key]["view"]


def test_layout_errors_name_the_expected_file(tmp_path):
  download = tmp_path / "download"
  fake.write(str(download))
  os.remove(download / "annotations" / "image_labels_test.csv")
  with pytest.raises(errors.DataError,
                     match=r"expected .*annotations/image_labels_test.csv.*physionet.org") as e:
    _prepare(tmp_path)
  assert "\n" not in str(e.value)

  fake.write_kaggle(str(tmp_path / "kaggle"))
  with pytest.raises(errors.DataError, match=r"Kaggle VinBigData.*clipmed reads the PhysioNet "
                     r"release: expected .*annotations/image_labels_train.csv"):
    _prepare(tmp_path, download="kaggle")

  fake_cxr14.write(str(tmp_path / "nih"))  # another dataset's download
  with pytest.raises(errors.DataError, match=r"expected .*annotations/image_labels_train.csv; "
                     r"found \[.*Data_Entry_2017.csv"):
    _prepare(tmp_path, download="nih")


def test_bad_label_files_and_reject_rate_stop_before_any_image(tmp_path):
  download = tmp_path / "download"
  fake.write(str(download))
  # Checked at listing: t8 is missing, 1 of the 9 train images.
  with pytest.raises(errors.DataError, match=r"1 of 9 images of split 'train' were rejected"):
    _prepare(tmp_path, max_reject_fraction=0.05)
  assert not os.path.exists(tmp_path / "tfds" / "clipmed_vindr_cxr" / "s64" / "1.0.0")

  path = download / "annotations" / "image_labels_train.csv"
  text = path.read_text()
  path.write_text(text.replace(f"{ID('t2')},R8,0", f"{ID('t2')},R8,0.5", 1))
  with pytest.raises(errors.DataError, match=r"image_labels_train.csv, line \d+, column "
                     r"'Aortic enlargement': '0.5' is not a label"):
    _prepare(tmp_path)
  path.write_text(text.replace(",Pneumothorax,", ",Pneumothorax (left),"))
  with pytest.raises(errors.DataError, match=r"has no column 'Pneumothorax'"):
    _prepare(tmp_path)
  path.write_text(text)

  test_path = download / "annotations" / "image_labels_test.csv"
  lines = test_path.read_text().splitlines(keepends=True)
  test_path.write_text("".join(lines + lines[1:2]))
  with pytest.raises(errors.DataError, match=rf"line 5: image {ID('s0')} is listed twice"):
    _prepare(tmp_path)


def test_options_are_validated(tmp_path):
  (tmp_path / "download").mkdir()
  with pytest.raises(errors.ConfigError, match="vindr_cxr has no option"):
    _prepare(tmp_path, options=dict(views="all"))
