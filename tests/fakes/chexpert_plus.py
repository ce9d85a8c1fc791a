"""A small fake copy of CheXpert Plus, laid out like the download.

    df_chexpert_plus_240401.csv        27 columns, one row per image (UTF-8 with BOM, CRLF line
                                       ends, CRLF and line breaks inside quoted report cells)
    PNG/{train,valid}/patientN/studyN/viewN_*.png    form="png": the PNG release (8-bit grey, one
                                       16-bit, one RGBA), with chexbert_labels/report_fixed.json
    {train,valid}/patientN/studyN/viewN_*.jpg        form="jpg": JPEGs at path_to_image, with
                                       CheXpert-v1.0/{train,valid}.csv for the labels

Faults planted on purpose: a truncated image (TRUNCATED), a listed image missing on disk (MISSING),
a study whose findings, impression and report are all empty (EMPTY_REPORT).
"""

import csv
import json
import os

import numpy as np

from tests.fakes import chexpert as fake_chexpert
from tests.fakes import images as fake_images

COLUMNS = ("path_to_image", "path_to_dcm", "frontal_lateral", "ap_pa", "deid_patient_id",
           "patient_report_date_order", "report", "section_narrative",
           "section_clinical_history", "section_history", "section_comparison",
           "section_technique", "section_procedure_comments", "section_findings",
           "section_impression", "section_end_of_impression", "section_summary",
           "section_accession_number", "age", "sex", "race", "ethnicity", "interpreter_needed",
           "insurance_type", "recent_bmi", "deceased", "split")
# The report text when the section columns are empty: NARRATIVE is no header clipmed knows.
FALLBACK_REPORT = ("NARRATIVE:\r\nCHEST 1 VIEW\r\n\r\nFINDINGS: The lungs are clear.\r\n\r\n"
                   "IMPRESSION:\r\nNo acute cardiopulmonary process.")
# (path_to_image, frontal_lateral, ap_pa, findings, impression, report, split, CheXbert labels,
#  CheXpert's own labels (CheXpert-v1.0 train/valid.csv)); labels are {name: value}.
ROWS = [
    ("train/patient00001/study1/view1_frontal.jpg", "Frontal", "PA",
     "Moderate cardiomegaly. Small left pleural effusion.", "Cardiomegaly and effusion.", None,
     "train", {"Cardiomegaly": 1.0, "Pleural Effusion": 1.0},
     {"Cardiomegaly": "1.0", "Pleural Effusion": "-1.0"}),
    ("train/patient00001/study1/view2_lateral.jpg", "Lateral", "",
     "Moderate cardiomegaly. Small left pleural effusion.", "Cardiomegaly and effusion.", None,
     "train", {"Cardiomegaly": 1.0, "Pleural Effusion": 1.0},
     {"Cardiomegaly": "1.0", "Pleural Effusion": "-1.0"}),
    ("train/patient00001/study2/view1_frontal.jpg", "Frontal", "AP", "", "", FALLBACK_REPORT,
     "train", {"No Finding": 1.0}, {"No Finding": "1.0"}),
    ("train/patient00002/study1/view1_frontal.jpg", "Frontal", "",
     "Right lower lobe consolidation.\nNo pneumothorax.", "Pneumonia.", None, "train",
     {"Consolidation": 1.0, "Pneumonia": -1.0, "Pneumothorax": 0.0},
     {"Consolidation": "1.0", "Pneumonia": "-1.0", "Pneumothorax": "0.0"}),
    ("train/patient00003/study1/view1_frontal.jpg", "Frontal", "PA",
     "Left PICC tip in the SVC.", "Line in place.", None, "train", {"Support Devices": 1.0},
     {"Support Devices": "1.0"}),
    ("train/patient00004/study1/view1_frontal.jpg", "Frontal", "AP",
     "Mild pulmonary edema.", "Edema.", None, "train", {"Edema": 1.0}, {"Edema": "1.0"}),
    ("train/patient00005/study1/view1_frontal.jpg", "Frontal", "PA",
     "Heart size is normal.", "Normal chest.", None, "train", {"No Finding": 1.0},
     {"No Finding": "1.0"}),
    ("train/patient00006/study1/view1_frontal.jpg", "Frontal", "PA", "", "", "", "train",
     {}, {}),
    ("train/patient00007/study1/view1_frontal.jpg", "Frontal", "AP",
     "Bibasilar atelectasis.\r\nNo effusion.", "Atelectasis.", None, "train",
     {"Atelectasis": 1.0, "Pleural Effusion": 0.0}, {"Atelectasis": "1.0"}),
    ("train/patient00008/study1/view1_frontal.jpg", "Frontal", "PA",
     "The lungs are clear.", "No acute process.", None, "train", {"No Finding": 1.0},
     {"No Finding": "1.0"}),
    ("valid/patient64541/study1/view1_frontal.jpg", "Frontal", "AP",
     "Large right pneumothorax.", "Pneumothorax.", None, "valid", {"Pneumothorax": 1.0},
     {"Pneumothorax": "1.0"}),
    ("valid/patient64541/study1/view2_lateral.jpg", "Lateral", "LL",
     "Large right pneumothorax.", "Pneumothorax.", None, "valid", {"Pneumothorax": 1.0},
     {"Pneumothorax": "1.0"}),
    ("valid/patient64542/study1/view1_frontal.jpg", "Frontal", "PA",
     "Heart and lungs are normal.", "Normal.", None, "valid", {"No Finding": 1.0},
     {"No Finding": "1.0"}),
]
TRUNCATED = "train/patient00004/study1/view1_frontal.jpg"
MISSING = "train/patient00005/study1/view1_frontal.jpg"
EMPTY_REPORT = "train/patient00006/study1/view1_frontal.jpg"
PNG16 = "train/patient00002/study1/view1_frontal.jpg"  # a 16-bit PNG in the PNG release
RGBA = "train/patient00003/study1/view1_frontal.jpg"   # an RGBA PNG in the PNG release
SIZE = (96, 80)


def pixels(image_id: str, *, bits: int = 8) -> np.ndarray:
  """The pixels written for an image: uint8 (or uint16 for bits=16) [96, 80]."""
  seed = [row[0] for row in ROWS].index(image_id)
  return fake_images.chest_like(*SIZE, seed=seed, bits=bits)


def _report(findings: str, impression: str, report) -> str:
  if report is not None:
    return report
  return f"FINDINGS:\r\n{findings}\r\n\r\nIMPRESSION:\r\n{impression}" if findings else ""


def write(root: str, *, form: str = "png") -> str:
  """Writes the fake download into root; form="png" (the PNG release + CheXbert labels) or
  "jpg" (JPEGs at path_to_image + CheXpert-v1.0's train/valid.csv). Returns root."""
  if form not in ("png", "jpg"):
    raise ValueError(f"form must be png or jpg, got {form!r}")
  os.makedirs(root, exist_ok=True)
  with open(os.path.join(root, "df_chexpert_plus_240401.csv"), "w", newline="",
            encoding="utf-8-sig") as f:
    writer = csv.writer(f, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for n, (image, side, projection, findings, impression, report, split, *_) in enumerate(ROWS):
      cells = dict.fromkeys(COLUMNS, "")
      cells.update(path_to_image=image, path_to_dcm=image.replace(".jpg", ".dcm"),
                   frontal_lateral=side, ap_pa=projection, deid_patient_id=f"pid{n:04d}",
                   patient_report_date_order="1", report=_report(findings, impression, report),
                   section_findings=findings, section_impression=impression, age="61",
                   sex="Female", race="White", split=split)
      writer.writerow([cells[name] for name in COLUMNS])
  for image, *_ in ROWS:
    if image == MISSING:
      continue
    if form == "jpg":
      file = fake_images.write_jpeg(os.path.join(root, image), pixels(image))
    else:
      file = os.path.join(root, "PNG", image.replace(".jpg", ".png"))
      if image == PNG16:
        fake_images.write_png16(file, pixels(image, bits=16))
      elif image == RGBA:
        fake_images.write_rgba_png(file, pixels(image))
      else:
        fake_images.write_png(file, pixels(image))
    if image == TRUNCATED:
      fake_images.write_truncated(file, file)
  if form == "png":
    os.makedirs(os.path.join(root, "chexbert_labels"), exist_ok=True)
    with open(os.path.join(root, "chexbert_labels", "report_fixed.json"), "w",
              encoding="utf-8") as f:
      names = fake_chexpert.LABEL_COLUMNS[1:] + fake_chexpert.LABEL_COLUMNS[:1]  # No Finding last
      for image, *_, chexbert, _ in ROWS:
        f.write(json.dumps({"path_to_image": image,
                            **{name: chexbert.get(name) for name in names}}) + "\n")
  else:
    top = os.path.join(root, "CheXpert-v1.0")
    os.makedirs(top, exist_ok=True)
    for name, split in (("train.csv", "train"), ("valid.csv", "valid")):
      with open(os.path.join(top, name), "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA",
                         *fake_chexpert.LABEL_COLUMNS])
        for image, side, projection, *_, labels in ROWS:
          if image.startswith(split + "/"):
            writer.writerow([f"CheXpert-v1.0/{image}", "Female", "61", side, projection,
                             *(labels.get(c, "") for c in fake_chexpert.LABEL_COLUMNS)])
  return root
