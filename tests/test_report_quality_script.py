"""scripts/measure_report_quality.py on small files written here (no real reports)."""

import csv
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from clipmed.report import chexpert
from tests.fakes import chexpert_plus as fake_chexpert_plus
from tests.fakes import mimic_cxr as fake_mimic_cxr

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "measure_report_quality.py")

sys.path.insert(0, os.path.join(ROOT, "scripts"))
import measure_report_quality as mrq  # noqa: E402  pylint: disable=wrong-import-position
import openi_reference  # noqa: E402  pylint: disable=wrong-import-position


def _run(*args):
  return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True,
                        cwd=ROOT, check=False)


def _rows(out: str, source: str) -> dict[str, list[str]]:
  block = out.split(f"shipped {source} labels")[1].split("macro F1")[0]
  rows = {}
  for line in block.splitlines()[2:]:
    for name in chexpert.CATEGORIES:
      if line[2:].startswith(name + " "):
        rows[name] = line[2 + len(name):].split()
  return rows


def test_split_half_is_fixed_and_balanced():
  halves = [openi_reference.split_half(str(uid)) for uid in range(1000)]
  assert halves == [openi_reference.split_half(str(uid)) for uid in range(1000)]
  assert 400 < halves.count("develop") < 600
  assert set(halves) == set(openi_reference.HALVES)


def test_mimic_cxr_agreement_with_chexpert_and_negbio(tmp_path):
  root = fake_mimic_cxr.write(str(tmp_path / "mimic"))
  result = _run("--dataset", "mimic_cxr", "--data_dir", root)
  assert result.returncode == 0, result.stderr
  # 9 studies listed; the empty report and the non-UTF-8 one cannot be read.
  for source in ("chexpert", "negbio"):
    assert f"clipmed's rules vs the shipped {source} labels, 7 reports" in result.stdout
    rows = _rows(result.stdout, source)
    assert set(rows) == set(chexpert.CATEGORIES)
    # Columns: reference positives, clipmed positives, F1, same status.
    assert rows["Pneumothorax"][:3] == ["1", "1", "1.000"]
    assert rows["Cardiomegaly"][:3] == ["1", "1", "1.000"]
    assert rows["Lung Lesion"][:3] == ["0", "0", "-"]


def test_chexpert_plus_agreement_with_chexbert(tmp_path):
  root = fake_chexpert_plus.write(str(tmp_path / "plus"))
  result = _run("--dataset", "chexpert_plus", "--data_dir", root)
  assert result.returncode == 0, result.stderr
  # One report per study; the study without any report text is left out.
  match = re.search(r"shipped chexbert labels, (\d+) reports", result.stdout)
  studies = {image.rsplit("/", 1)[0] for image, *_ in fake_chexpert_plus.ROWS}
  assert match and int(match.group(1)) == len(studies) - 1
  rows = _rows(result.stdout, "chexbert")
  assert rows["Pleural Effusion"][:3] == ["1", "1", "1.000"]


def _write_openi(path, rows) -> str:
  """An openi_dev.csv-like file of rows (uid, findings, impression, mesh codes, {category: "1"})."""
  with open(path, "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f)
    writer.writerow(["uid", "findings", "impression", "mesh", *chexpert.CATEGORIES])
    for uid, findings, impression, codes, labels in rows:
      writer.writerow([uid, findings, impression, codes]
                      + [labels.get(c, "") for c in chexpert.CATEGORIES])
  return str(path)


def test_openi_mode_on_a_small_csv(tmp_path):
  path = _write_openi(tmp_path / "reports.csv", [
      ("1", "Large right upper lobe mass.", "Lung mass.", "Mass/lung/upper lobe/right",
       {"Lung Lesion": "1"}),
      ("2", "Heart size is normal. Lungs are clear.", "Normal.", "", {"No Finding": "1"}),
      ("3", "Small left pleural effusion. Moderate cardiomegaly.", "", "",
       {"Pleural Effusion": "1", "Cardiomegaly": "1"}),
      ("4", "Lungs are clear.", "No acute disease.", "", {"No Finding": "1"})])
  result = _run("--openi", path)
  assert result.returncode == 0, result.stderr
  assert "all 4 reports" in result.stdout
  assert "0 reports with an enlarged cardiac shadow" in result.stdout
  assert "0 reports whose only Nodule codes are calcified nodules" in result.stdout
  for name in ("No Finding", "Cardiomegaly", "Lung Lesion", "Pleural Effusion"):
    assert re.search(name + r" +\d+ +\d+ +0 +0 .* 1\.000\n", result.stdout), name
  assert re.search(r"Fracture +0 +0 +0 +0 +- +- +-\n", result.stdout)
  assert re.search(r"macro F1, 8 starred categories: .*all 1\.000", result.stdout)
  # The report about a mass alone gets no triplet: its r^r would be empty.
  assert "abnormal reports (labeler): 2; with a triplet: 1 (50.0%)" in result.stdout
  assert "triplets failing a check: 0/1" in result.stdout


def _positives(*names: str):
  row = np.zeros(chexpert.NUM_CATEGORIES, np.float32)
  for name in names:
    row[chexpert.INDEX[name]] = 1.0
  return row


@pytest.mark.parametrize("codes, before, after", [
    # One calcified nodule coded twice: no Lung Lesion, and No Finding by CheXpert's rule.
    ("Nodule/lung/base/right/small;Calcified Granuloma/lung/base/right/small",
     ("Lung Lesion",), ("No Finding",)),
    ("Nodule/lung/apex/left;Calcinosis/lung/apex/left;Catheters, Indwelling",
     ("Lung Lesion", "Support Devices"), ("No Finding", "Support Devices")),
    ("Nodule/lung/apex/left;Calcinosis/lung/apex/left;Cardiomegaly/mild",
     ("Lung Lesion", "Cardiomegaly"), ("Cardiomegaly",)),
    # A nodule elsewhere, a mass, or an uncalcified granuloma stays a lesion.
    ("Nodule/lung/apex/left;Calcified Granuloma/lung/base/right", ("Lung Lesion",),
     ("Lung Lesion",)),
    ("Nodule/lung/apex/left;Calcinosis/lung/apex/left;Mass/lung/hilum/right",
     ("Lung Lesion",), ("Lung Lesion",)),
    ("Nodule/lung/lingula;Granuloma/lung/lingula", ("Lung Lesion",), ("Lung Lesion",)),
    ("", ("Lung Lesion",), ("Lung Lesion",)),
])
def test_calcified_nodule_correction(codes, before, after):
  got = openi_reference.calcified_nodule_correction(codes, _positives(*before))
  np.testing.assert_array_equal(got, _positives(*after))


def test_openi_errors_and_the_cardiac_shadow_correction(tmp_path):
  # The reference (as the CSV maps it) leaves out the enlarged cardiac shadow of report 1 and the
  # possible effusion of report 2.
  path = _write_openi(tmp_path / "reports.csv", [
      ("1", "The cardiac silhouette is enlarged.", "", "Cardiac Shadow/enlarged/mild",
       {"No Finding": "1"}),
      ("2", "Possible small right pleural effusion. No pneumothorax.", "", "",
       {"No Finding": "1"})])
  half = {uid: openi_reference.split_half(uid) for uid in ("1", "2")}
  result = _run("--openi", path, "--errors", "all")
  assert result.returncode == 0, result.stderr
  assert "1 reports with an enlarged cardiac shadow count as Cardiomegaly" in result.stdout
  assert re.search(r"Cardiomegaly +1 +1 +0 +0 ", result.stdout)
  errors = result.stdout.split("Errors, all reports")[1]
  assert errors.count("  --- ") == 2  # Pleural Effusion FP and No Finding FN, both of report 2
  assert (f"--- Pleural Effusion FP (uncertain), uid 2 ({half['2']}); reference codes: -\n"
          '    Pleural Effusion, uncertain "effusion": Possible small right pleural effusion.\n'
          in errors)
  assert (f"--- No Finding FN, uid 2 ({half['2']}); reference codes: -\n"
          '    Pleural Effusion, uncertain "effusion": Possible small right pleural effusion.\n'
          in errors)
  raw = _run("--openi", path, "--raw_reference", "--errors", half["1"])
  assert raw.returncode == 0, raw.stderr
  assert "Reference as the CSV has it (--raw_reference):" in raw.stdout
  assert re.search(r"Cardiomegaly +0 +0 +1 +0 ", raw.stdout)
  assert (f"--- Cardiomegaly FP (positive), uid 1 ({half['1']}); reference codes: "
          "Cardiac Shadow/enlarged/mild\n"
          '    Cardiomegaly, positive "cardiac silhouette is enlarged": '
          "The cardiac silhouette is enlarged.\n" in raw.stdout)


@pytest.mark.parametrize("codes, before, after", [
    ("Cardiac Shadow/enlarged/mild;Calcinosis/aorta", ("No Finding",), ("Cardiomegaly",)),
    ("Cardiac Shadow/enlarged;Cardiomegaly", ("Cardiomegaly",), ("Cardiomegaly",)),
    ("Cardiac Shadow/enlarged;Catheters, Indwelling", ("No Finding", "Support Devices"),
     ("Cardiomegaly", "Support Devices")),
    # Another qualifier of the cardiac shadow is not an enlargement.
    ("Cardiac Shadow/normal", ("No Finding",), ("No Finding",)),
    ("", ("No Finding",), ("No Finding",)),
])
def test_enlarged_cardiac_shadow_correction(codes, before, after):
  got = openi_reference.enlarged_cardiac_shadow_correction(codes, _positives(*before))
  np.testing.assert_array_equal(got, _positives(*after))


@pytest.mark.parametrize("args, message", [
    ((), "pass either --openi"),
    (("--dataset", "mimic_cxr"), "needs --data_dir"),
    (("--dataset", "mimic_cxr", "--data_dir", "/nonexistent/mimic"), "is not a folder"),
    (("--openi", "/nonexistent/openi.csv"), "cannot read /nonexistent/openi.csv"),
])
def test_bad_arguments_are_one_line_errors(args, message):
  result = _run(*args)
  assert result.returncode == 2
  assert message in result.stderr and "Traceback" not in result.stderr


def test_compare_graph_nodes_counts_words_and_type():
  from clipmed.report import graph as graph_lib
  from clipmed.report import radgraph_adapter
  theirs = radgraph_adapter.annotations_to_graph({"entities": {
      "1": {"tokens": "effusion", "label": "OBS-DP", "start_ix": 2, "relations": []},
      "2": {"tokens": "pneumothorax", "label": "Observation::definitely absent", "start_ix": 5,
            "relations": []},
      "3": {"tokens": "left", "label": "ANAT-DP", "start_ix": 1, "relations": []}}})
  ours = graph_lib.ReportGraph(nodes=[("Effusion", "OBS-DP"), ("pneumothorax", "OBS-U"),
                                      ("left", "ANAT-DP"), ("lung", "ANAT-DP")], edges=[])
  table = mrq.compare_graph_nodes([ours], [theirs])
  assert table["OBS-DP"] == (1, 1, 1, 1.0)
  assert table["OBS-DA"] == (1, 0, 0, 0.0)
  assert table["OBS-U"] == (0, 1, 0, 0.0)
  assert table["ANAT-DP"] == (1, 2, 1, pytest.approx(2 / 3))


def test_f1_intervals_resample_the_reports():
  rng = np.random.default_rng(3)
  reference = np.where(rng.random((200, 14)) < 0.3, chexpert.POSITIVE, np.nan)
  reference[:, chexpert.INDEX["Edema"]] = np.nan  # found by neither side
  pred = reference.copy()
  perfect = mrq.f1_intervals(pred, reference)
  assert perfect["macro"] == (1.0, 1.0) and perfect["Lung Lesion"] == (1.0, 1.0)
  assert all(np.isnan(perfect["Edema"]))
  flipped = rng.random(pred.shape) < 0.2  # a fifth of the answers wrong
  pred[flipped] = np.where(np.isnan(reference[flipped]), chexpert.UNCERTAIN, np.nan)
  intervals = mrq.f1_intervals(pred, reference, seed=5)
  assert intervals == mrq.f1_intervals(pred, reference, seed=5)
  point = mrq.macro_f1(mrq.label_f1(pred, reference))
  low, high = intervals["macro"]
  assert low < point < high and high - low < 0.2
