"""A small fake copy of MIMIC-CXR-JPG 2.x + the MIMIC-CXR reports, laid out like the download.

    files/p10/p10000032/s50000001/<dicom_id>.jpg       images (real JPEGs)
    mimic-cxr-2.0.0-{split,metadata,chexpert,negbio}.csv.gz   the index files, gzip-compressed
    mimic-cxr-reports.zip (files/...txt inside) or files/pXX/pSUBJECT/sSTUDY.txt

Faults planted on purpose (FAULTS): a truncated JPEG, a listed image missing on disk, a study
with an empty report, a study whose report is not UTF-8 text (their images rejected), and a
lateral image (filtered, not rejected).
"""

import csv
import gzip
import io
import os
import zipfile

from clipmed.report import chexpert
from tests.fakes import images as fake_images

REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with cough

 TECHNIQUE:  Chest PA and lateral

 COMPARISON:  None.

 FINDINGS:

 {findings}

 IMPRESSION:

 {impression}
"""
# (subject, study, split, [(dicom_id, view)], findings, impression, chexpert labels {name: value})
STUDIES = [
    ("10000032", "50000001", "train", [("a1", "PA"), ("a2", "LATERAL")],
     "Moderate cardiomegaly. Small left pleural effusion.", "Cardiomegaly and effusion.",
     {"Cardiomegaly": "1.0", "Pleural Effusion": "1.0"}),
    ("10000032", "50000002", "train", [("b1", "AP")],
     "The lungs are clear. No pneumothorax.", "No acute cardiopulmonary process.",
     {"No Finding": "1.0"}),
    ("10000764", "50000003", "train", [("c1", "PA"), ("c2", "AP")],
     "Right lower lobe consolidation.", "Pneumonia.",
     {"Consolidation": "1.0", "Pneumonia": "-1.0"}),
    ("10000980", "50000004", "train", [("d1", "PA")],
     "", "", {}),  # empty report
    ("10001217", "50000005", "train", [("e1", "PA")],
     "Left PICC tip in the SVC. No effusion.", "Line in place.", {"Support Devices": "1.0"}),
    ("10001884", "50000006", "validate", [("f1", "PA")],
     "Mild pulmonary edema.", "Edema.", {"Edema": "1.0"}),
    ("10002013", "50000007", "test", [("g1", "AP")],
     "Large right pneumothorax.", "Pneumothorax.", {"Pneumothorax": "1.0"}),
    ("10002013", "50000008", "test", [("h1", "PA")],
     "Heart size is normal. Lungs are clear.", "Normal chest.", {"No Finding": "1.0"}),
    ("10003000", "50000009", "train", [("i1", "PA")],
     "Small right effusion.", "Effusion.", {"Pleural Effusion": "1.0"}),  # not UTF-8 text
]
TRUNCATED = "c2"   # its JPEG is cut in half
MISSING = "e1"     # listed in the index files, not on disk
EMPTY_REPORT_STUDY = "50000004"
NOT_UTF8_STUDY = "50000009"  # its report file holds Latin-1 bytes
LATERAL = "a2"
FAULTS = {"truncated": TRUNCATED, "missing": MISSING, "empty_report": EMPTY_REPORT_STUDY,
          "not_utf8": NOT_UTF8_STUDY, "lateral": LATERAL}


def write_gz_csv(path: str, header: list[str], rows: list[list[str]]) -> None:
  text = io.StringIO()
  writer = csv.writer(text, lineterminator="\n")
  writer.writerow(header)
  writer.writerows(rows)
  with gzip.open(path, "wt", encoding="utf-8") as f:
    f.write(text.getvalue())


def dicom_id(short: str) -> str:
  """A MIMIC-style dicom_id (five dash-separated 8-hex groups) for a short test name."""
  digits = "".join(f"{ord(c):02x}" for c in short).ljust(8, "0")[:8]
  return "-".join([digits] + ["0badf00d"] * 4)


def write(root: str, *, reports: str = "zip", size: tuple[int, int] = (96, 80)) -> str:
  """Writes the fake download into `root`; reports="zip" | "tree". Returns root."""
  os.makedirs(root, exist_ok=True)
  split_rows, meta_rows, label_rows, report_files = [], [], [], {}
  for n, (subject, study, split, images, findings, impression, labels) in enumerate(STUDIES):
    folder = os.path.join(root, "files", f"p{subject[:2]}", f"p{subject}", f"s{study}")
    for k, (short, view) in enumerate(images):
      did = dicom_id(short)
      split_rows.append([did, study, subject, split])
      meta_rows.append([did, subject, study, "CHEST (PA AND LAT)", view, str(size[0]),
                        str(size[1]), "21800506", "213014.531"])
      path = os.path.join(folder, f"{did}.jpg")
      if short == MISSING:
        continue
      pixels = fake_images.chest_like(*size, seed=10 * n + k)
      if short == TRUNCATED:
        fake_images.write_jpeg(path, pixels)
        fake_images.write_truncated(path, path)
      else:
        fake_images.write_jpeg(path, pixels)
    text = REPORT.format(findings=findings, impression=impression) if findings else "  \n"
    data = text.encode("latin-1") + b"\xe9\xff" if study == NOT_UTF8_STUDY else text.encode()
    report_files[f"files/p{subject[:2]}/p{subject}/s{study}.txt"] = data
    label_rows.append([subject, study]
                      + [labels.get(c, "") for c in sorted(chexpert.CATEGORIES)])
  write_gz_csv(os.path.join(root, "mimic-cxr-2.0.0-split.csv.gz"),
                ["dicom_id", "study_id", "subject_id", "split"], split_rows)
  write_gz_csv(os.path.join(root, "mimic-cxr-2.0.0-metadata.csv.gz"),
                ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription",
                 "ViewPosition", "Rows", "Columns", "StudyDate", "StudyTime"], meta_rows)
  for labeler in ("chexpert", "negbio"):  # NegBio's file has the same layout
    write_gz_csv(os.path.join(root, f"mimic-cxr-2.0.0-{labeler}.csv.gz"),
                  ["subject_id", "study_id"] + sorted(chexpert.CATEGORIES), label_rows)
  if reports == "zip":
    with zipfile.ZipFile(os.path.join(root, "mimic-cxr-reports.zip"), "w") as z:
      for name, data in sorted(report_files.items()):
        z.writestr(name, data)
  else:
    for name, data in report_files.items():
      os.makedirs(os.path.dirname(os.path.join(root, name)), exist_ok=True)
      with open(os.path.join(root, name), "wb") as f:
        f.write(data)
  return root
