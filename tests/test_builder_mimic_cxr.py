"""The mimic_cxr builder on a fake copy of the official layout (tests/fakes/mimic_cxr.py)."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from clipmed import errors
from clipmed.report import chexpert
from input_pipeline import prepare as prepare_lib
from tests.conftest import ROOT, prepared_records
from tests.fakes import mimic_cxr as fake

OPTIONS = dict(max_reject_fraction=0.6, vocab_size=200, image_size=64)


def _prepare(tmp_path, name="tfds", options=None, **kwargs):
  return prepare_lib.prepare("mimic_cxr", manual_dir=str(tmp_path / "download"),
                             data_dir=str(tmp_path / name), options=options or {},
                             progress=False, **{**OPTIONS, **kwargs})




@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  tmp_path = tmp_path_factory.mktemp("mimic")
  fake.write(str(tmp_path / "download"))
  return tmp_path, _prepare(tmp_path, workers=2)


def test_counts_rejects_and_filtered_views(prepared):
  tmp_path, summary = prepared
  # train: a1 (a2 lateral filtered), b1, c1 (c2 truncated), d1 rejected (empty report),
  # e1 rejected (missing), i1 rejected (report not UTF-8); validation: f1; test: g1, h1.
  assert summary["splits"] == {"train": 3, "validation": 1, "test": 2}
  assert summary["rejected"] == 4
  assert sum(summary["filtered"].values()) == 1
  with open(summary["rejects_csv"]) as f:
    rejects = {row["image_id"]: row for row in csv.DictReader(f)}
  assert rejects[fake.dicom_id(fake.TRUNCATED)]["reason"] == "image file is truncated"
  assert rejects[fake.dicom_id(fake.MISSING)]["reason"] == "file not found"
  assert rejects[fake.dicom_id("d1")]["reason"].startswith("empty report")
  assert rejects[fake.dicom_id("d1")]["study_id"] == fake.EMPTY_REPORT_STUDY
  assert rejects[fake.dicom_id("i1")]["reason"] == "report is not UTF-8 text"


def test_records_hold_images_labels_and_report_fields(prepared):
  _, summary = prepared
  train = prepared_records(summary, "train")
  assert set(train) == {fake.dicom_id(s) for s in ("a1", "b1", "c1")}
  row = train[fake.dicom_id("a1")]
  assert row["study_id"].decode() == "50000001" and row["patient_id"].decode() == "10000032"
  assert row["view"].decode() == "PA"
  assert row["image"].shape == (64, 53, 1) and row["image"].dtype == np.uint8  # 96 x 80 -> 64
  labels = row["labels"]  # mimic-cxr-2.0.0-chexpert.csv, in clipmed's category order
  assert labels[chexpert.INDEX["Cardiomegaly"]] == 1.0
  assert labels[chexpert.INDEX["Pleural Effusion"]] == 1.0
  assert np.isnan(labels[chexpert.INDEX["Edema"]])
  assert train[fake.dicom_id("c1")]["labels"][chexpert.INDEX["Pneumonia"]] == -1.0
  report = row["report"].decode()
  assert report.startswith("FINDINGS: Moderate cardiomegaly.") and "IMPRESSION:" in report
  assert "INDICATION" not in report and "___" not in report
  assert row["findings"].decode() == "Moderate cardiomegaly. Small left pleural effusion."
  assert row["neg_source"].decode() == "negated"
  assert row["neg_entity"].decode() in ("Cardiomegaly", "Pleural Effusion")
  neg = row["neg_labels"][chexpert.INDEX[row["neg_entity"].decode()]]
  assert neg == 0.0  # the hard negative states the chosen finding absent (labeler labels)
  graph = json.loads(row["graph"])
  assert graph["nodes"] and {"nodes", "edges"} == set(graph)


def test_index_hashes_and_tokenizer(prepared):
  _, summary = prepared
  root = summary["data_dir"]
  with open(os.path.join(root, "clipmed_index.json")) as f:
    index = json.load(f)
  assert len(index["train"]["image_id"]) == 3 and set(index["test"]["view"]) == {"AP", "PA"}
  with open(os.path.join(root, "metadata.json")) as f:
    meta = json.load(f)
  from input_pipeline.builders import base  # pylint: disable=g-import-not-at-top
  assert meta["splits"]["test"]["image_id_sha256"] == base.split_hash(
      [fake.dicom_id("g1"), fake.dicom_id("h1")])
  assert meta["class_names"] == list(chexpert.CATEGORIES)
  assert os.path.exists(os.path.join(root, "tokenizer", "tokenizer.json"))


def test_the_same_download_prepares_to_the_sameprepared_records(prepared, tmp_path):
  """Deterministic: a second build (one worker, reports as a folder) equals the first."""
  first_root, summary = prepared
  fake.write(str(tmp_path / "download"), reports="tree")
  again = _prepare(tmp_path, workers=1)
  assert again["splits"] == summary["splits"]
  for split in summary["splits"]:
    a, b = prepared_records(summary, split), prepared_records(again, split)
    assert set(a) == set(b)
    for key in a:
      for field in ("report_clean", "neg_report", "graph", "neg_graph", "report"):
        assert a[key][field] == b[key][field], (key, field)
      np.testing.assert_array_equal(a[key]["image"], b[key]["image"])
      np.testing.assert_array_equal(a[key]["labels"], b[key]["labels"])
  for name in ("vocab.txt", "tokenizer.json"):
    with open(os.path.join(summary["data_dir"], "tokenizer", name), "rb") as f, \
        open(os.path.join(again["data_dir"], "tokenizer", name), "rb") as g:
      assert f.read() == g.read()


def test_views_all_and_labeler_labels_are_other_datasets(prepared):
  tmp_path, summary = prepared
  other = _prepare(tmp_path, name="tfds_all", options=dict(views="all", labels="labeler"))
  assert other["config"] != summary["config"] and other["splits"]["train"] == 4
  assert other["filtered"] == {}


def test_layout_errors_name_the_expected_file(tmp_path):
  download = tmp_path / "download"
  fake.write(str(download))
  os.remove(download / "mimic-cxr-2.0.0-split.csv.gz")
  with pytest.raises(errors.DataError, match=r"mimic-cxr-2.0.0-split.csv.gz.*physionet.org"):
    _prepare(tmp_path)
  fake.write(str(download))
  os.remove(download / "mimic-cxr-reports.zip")
  with pytest.raises(errors.DataError, match=r"reports are missing.*mimic-cxr-reports.zip"):
    _prepare(tmp_path)
  fake.write(str(download))
  # Checked before any image is decoded: the missing file, the empty and the non-UTF-8 report.
  with pytest.raises(errors.DataError, match=r"3 of 7 images of split 'train' were rejected"):
    _prepare(tmp_path, max_reject_fraction=0.05)
  assert not os.path.exists(tmp_path / "tfds" / "clipmed_mimic_cxr" / "s64_v200" / "1.0.0")
  with pytest.raises(errors.ConfigError, match="views"):
    _prepare(tmp_path, options=dict(views="sideways"))


def test_cli_prints_one_json_summary_and_rebuilds_nothing(prepared):
  tmp_path, summary = prepared
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  args = [sys.executable, "-m", "input_pipeline.prepare", "--dataset=mimic_cxr",
          f"--manual_dir={tmp_path / 'download'}", f"--data_dir={tmp_path / 'tfds'}",
          "--image_size=64", "--vocab_size=200", "--max_reject_fraction=0.6"]
  proc = subprocess.run(args, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert json.loads(proc.stdout.strip().splitlines()[-1]) == summary
  assert "images:" not in proc.stderr  # prepared already: nothing rebuilt
  bad = subprocess.run(args[:4] + ["--manual_dir=/nonexistent", "--data_dir=" + str(tmp_path)],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
  assert bad.returncode == 2 and "Traceback" not in bad.stderr
  assert bad.stderr.strip().splitlines()[-1].startswith("error: mimic_cxr: --manual_dir=")


@pytest.mark.slow
def test_beam_direct_runner_builds_the_same_dataset(prepared, tmp_path):
  """The distributed path (Apache Beam, here the DirectRunner) writes the same records, rejects
  and split hashes as the multiprocessing path."""
  first_root, summary = prepared
  beam = _prepare(first_root, name=f"tfds_beam_{tmp_path.name}", beam_runner="DirectRunner")
  assert {k: beam[k] for k in ("splits", "rejected", "filtered", "config")} == {
      k: summary[k] for k in ("splits", "rejected", "filtered", "config")}
  with open(beam["rejects_csv"]) as f, open(summary["rejects_csv"]) as g:
    assert f.read() == g.read()
  for split in summary["splits"]:
    a, b = prepared_records(summary, split), prepared_records(beam, split)
    assert set(a) == set(b)
    for key in a:
      assert a[key]["report_clean"] == b[key]["report_clean"]
      np.testing.assert_array_equal(a[key]["image"], b[key]["image"])
  with open(os.path.join(summary["data_dir"], "metadata.json")) as f, \
      open(os.path.join(beam["data_dir"], "metadata.json")) as g:
    assert json.load(f)["splits"] == json.load(g)["splits"]
