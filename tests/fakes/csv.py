"""A small fake hospital export for the csv dataset: CSV files and the image files they list.

    export.csv     as a spreadsheet saves it: UTF-8 BOM, CRLF, line breaks inside quoted report
                   cells; columns image_path, report, exam_id, patient, view, CheXpert-named label
                   columns in three spellings (Cardiomegaly, pleural_effusion, EDEMA), age
    custom.csv     plain UTF-8, LF: file, text, split (mixed case), labels Nodule, Mass,
                   cardiomegaly
    images/...     8-bit PNG, JPEG, 16-bit PNG, RGBA PNG; dicom/...: a MONOCHROME1 16-bit DICOM
                   and a JPEG-baseline compressed DICOM

Faults planted on purpose: a truncated PNG (e6), a listed file missing on disk (e7), a study with
an empty report (e8), a row without an image path, an image path with Windows separators (e9).
"""

import os

import numpy as np

from tests.fakes import images as fake_images

SIZE = (96, 80)  # height, width of every image
HEADER = ["image_path", "report", "exam_id", "patient", "view", "Cardiomegaly", "pleural_effusion",
          "EDEMA", "age"]
# (image_path, report, exam_id, patient, view, Cardiomegaly, pleural_effusion, EDEMA, age)
ROWS = [
    ("images/e1_pa.png", "FINDINGS:\nModerate cardiomegaly.\nSmall left pleural effusion.\n\n"
     "IMPRESSION:\nCardiomegaly and effusion.", "E1", "P1", "PA", "1", "1.0", "", "71"),
    ("images/e1_lat.jpg", "", "E1", "P1", "Lat", "1", "1.0", "", "71"),  # report on row 1 only
    ("images/e2.png", "Lungs are clear.\nNo pneumothorax.", "E2", "P1", "AP", "0", "0.0", "", "71"),
    ("dicom/e3.dcm", "Findings: Mild pulmonary edema, \"new\" since prior.\nImpression: Edema.",
     "E3", "P2", "PA", "-1", "", "1", "55"),
    ("dicom/e4.dcm", "FINDINGS: Right PICC tip in the SVC.", "E4", "P3", "AP", "", "", "", "60"),
    ("images/e5.png", "IMPRESSION: No acute disease.", "E5", "P3", "frontal", "0", "0", "0", "60"),
    ("images/e6.png", "Left lower lobe opacity.", "E6", "P4", "PA", "", "", "", "48"),
    ("images/missing.png", "Right effusion.", "E7", "P5", "PA", "", "1", "", "39"),
    ("images/e8.png", "", "E8", "P6", "PA", "", "", "", "80"),  # empty report
    ("images\\e9.png", "Heart size normal.", "E9", "P7", "PA", "0", "", "", "33"),
    ("images/e10.png", "Small right pneumothorax.", "E10", "P8", "AP", "", "", "", "29"),
    ("", "Report of a study without images.", "E11", "P9", "PA", "", "", "", "50"),
]
MONOCHROME1 = "dicom/e3.dcm"
JPEG_DICOM = "dicom/e4.dcm"
PNG16 = "images/e2.png"
RGBA = "images/e5.png"
JPEG = "images/e1_lat.jpg"
TRUNCATED = "images/e6.png"
MISSING = "images/missing.png"
EMPTY_REPORT_STUDY = "E8"
CUSTOM_HEADER = ["file", "text", "split", "Nodule", "Mass", "cardiomegaly"]
CUSTOM_ROWS = [
    ("images/e1_pa.png", "Moderate cardiomegaly. Small nodule in the right upper lobe.", "Train",
     "1", "0", "1"),
    ("images/e2.png", "No nodule or mass.", "TRAIN", "0", "0", "0"),
    ("images/e5.png", "Left hilar mass.", "val", "", "1.0", ""),
    ("images/e9.png", "Lungs are clear.", "Validation", "0", "", "0"),
    ("images/e10.png", "Possible nodule.", "test", "-1", "", ""),
]


def pixels(index: int, bits: int = 8) -> np.ndarray:
  """The chest_like image written for ROWS[index] (uint8, or uint16 with bits=16)."""
  return fake_images.chest_like(*SIZE, seed=index, bits=bits)


def _cell(value: str) -> str:
  if any(c in value for c in ',"\r\n'):
    return '"' + value.replace('"', '""') + '"'
  return value


def write_csv(path: str, header, rows, *, bom: bool = True, newline: str = "\r\n") -> str:
  """Writes rows as a spreadsheet would (BOM, CRLF also inside quoted cells). Returns path."""
  lines = [",".join(_cell(c.replace("\n", newline)) for c in row) for row in [header, *rows]]
  with open(path, "wb") as f:
    f.write((("\ufeff" if bom else "") + newline.join(lines) + newline).encode("utf-8"))
  return path


def write(root: str) -> str:
  """Writes export.csv, custom.csv and the images into `root`. Returns root."""
  os.makedirs(root, exist_ok=True)
  for index, row in enumerate(ROWS):
    name = row[0].replace("\\", "/")
    path = os.path.join(root, name)
    if not name or name == MISSING:
      continue
    if name == MONOCHROME1:  # stored inverted: low values white
      stored = (2**16 - 1 - pixels(index, bits=16)).astype(np.uint16)
      fake_images.write_dicom(path, stored, bits_stored=16, photometric="MONOCHROME1",
                              view_position="PA")
    elif name == JPEG_DICOM:
      fake_images.write_dicom(path, pixels(index), bits_stored=8, compressed="jpeg_baseline",
                              view_position="AP")
    elif name == PNG16:
      fake_images.write_png16(path, pixels(index, bits=16))
    elif name == RGBA:
      fake_images.write_rgba_png(path, pixels(index))
    elif name == JPEG:
      fake_images.write_jpeg(path, pixels(index))
    else:
      fake_images.write_png(path, pixels(index))
      if name == TRUNCATED:
        fake_images.write_truncated(path, path)
  write_csv(os.path.join(root, "export.csv"), HEADER, ROWS)
  write_csv(os.path.join(root, "custom.csv"), CUSTOM_HEADER, CUSTOM_ROWS, bom=False,
            newline="\n")
  return root
