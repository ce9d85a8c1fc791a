"""The report CLI: python -m clipmed.report label / cxr-align."""

import csv
import os
import subprocess
import sys

import pytest

from clipmed.errors import UserError
from clipmed.report import chexpert
from clipmed.report import __main__ as report_cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPORTS = [
    ("s1", "Moderate cardiomegaly. Small left pleural effusion. No pneumothorax."),
    ("s2", "The heart size is normal. Lungs are clear. No effusion."),
    ("s3", "Possible right lower lobe pneumonia. Right PICC tip in the SVC."),
]


def _write(path, rows, header=("study_id", "report")):
  with open(path, "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows(rows)


def _read(path):
  with open(path, newline="", encoding="utf-8") as f:
    return list(csv.DictReader(f))


def test_label_cli_writes_chexpert_format(tmp_path):
  src, out = tmp_path / "in.csv", tmp_path / "out.csv"
  _write(src, REPORTS)
  assert report_cli.run(["label", "--input", str(src), "--text-column", "report", "--output",
                         str(out)]) == 0
  rows = _read(out)
  assert list(rows[0]) == ["study_id", "report"] + list(chexpert.CATEGORIES)
  assert [r["study_id"] for r in rows] == ["s1", "s2", "s3"]
  assert rows[0]["Cardiomegaly"] == "1.0" and rows[0]["Pneumothorax"] == "0.0"
  assert rows[0]["No Finding"] == "" and rows[0]["Edema"] == ""
  assert rows[1]["No Finding"] == "1.0"
  assert rows[2]["Pneumonia"] == "-1.0" and rows[2]["Support Devices"] == "1.0"


def test_label_cli_joins_columns_and_prefixes(tmp_path):
  src, out = tmp_path / "in.csv", tmp_path / "out.csv"
  _write(src, [("No effusion.", "Mild cardiomegaly.", "1")],
         header=("findings", "impression", "Cardiomegaly"))
  with pytest.raises(UserError, match="--prefix"):
    report_cli.run(["label", "--input", str(src), "--text-column", "findings", "--text-column",
                    "impression", "--output", str(out)])
  report_cli.run(["label", "--input", str(src), "--text-column", "findings", "--text-column",
                  "impression", "--output", str(out), "--prefix", "pred_"])
  row = _read(out)[0]
  assert row["Cardiomegaly"] == "1" and row["pred_Cardiomegaly"] == "1.0"
  assert row["pred_Pleural Effusion"] == "0.0"


@pytest.mark.parametrize("problem, message", [
    ("missing_file", "does not exist"),
    ("missing_column", "has no column 'text'"),
    ("empty_report", "empty report"),
    ("missing_folder", "output folder"),
])
@pytest.mark.parametrize("command", ["label", "cxr-align"])
def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, command, problem, message):
  src, out = tmp_path / "in.csv", tmp_path / "out.csv"
  column = "report"
  if problem == "missing_column":
    _write(src, REPORTS)
    column = "text"
  elif problem == "empty_report":
    _write(src, REPORTS + [("s4", "   ")])
  elif problem == "missing_folder":
    _write(src, REPORTS)
    out = tmp_path / "nowhere" / "out.csv"
  with pytest.raises(UserError, match=message):
    report_cli.run([command, "--input", str(src), "--text-column", column, "--output", str(out)])
  assert not out.exists()
  assert [p for p in os.listdir(tmp_path) if p.startswith(".tmp_")] == []


def test_label_cli_skip_empty(tmp_path):
  src, out = tmp_path / "in.csv", tmp_path / "out.csv"
  _write(src, REPORTS + [("s4", "")])
  report_cli.run(["label", "--input", str(src), "--text-column", "report", "--output", str(out),
                  "--skip-empty"])
  rows = _read(out)
  assert all(rows[3][c] == "" for c in chexpert.CATEGORIES)


def test_cxr_align_cli(tmp_path):
  src, out = tmp_path / "in.csv", tmp_path / "out.csv"
  _write(src, REPORTS)
  report_cli.run(["cxr-align", "--input", str(src), "--text-column", "report", "--output",
                  str(out), "--seed", "1", "--id-column", "study_id"])
  rows = _read(out)
  assert list(rows[0]) == ["source_row", "study_id", "chosen_entity", "report", "negated",
                           "omitted"]
  assert [r["study_id"] for r in rows] == ["s1"]  # s2 normal; s3 only uncertain
  assert rows[0]["chosen_entity"] in ("Cardiomegaly", "Pleural Effusion")
  assert rows[0]["negated"] != rows[0]["report"] and rows[0]["omitted"] != rows[0]["report"]


@pytest.mark.parametrize("command", ["label", "cxr-align"])
def test_entry_points(tmp_path, command):
  src, out = tmp_path / "in.csv", tmp_path / "out.csv"
  _write(src, REPORTS)
  env = dict(os.environ, PYTHONPATH=ROOT)
  cli = [sys.executable, "-m", "clipmed.report", command]
  ok = subprocess.run(cli + ["--input", str(src), "--text-column", "report", "--output", str(out)],
                      capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
  assert ok.returncode == 0, ok.stderr
  assert out.exists()
  bad = subprocess.run(cli + ["--input", str(tmp_path / "nope.csv"), "--text-column", "report",
                              "--output", str(out)],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
  assert bad.returncode == 2
  assert bad.stderr.startswith("error:") and "nope.csv" in bad.stderr
  assert "Traceback" not in bad.stderr
