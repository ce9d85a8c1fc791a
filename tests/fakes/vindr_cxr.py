"""A small fake copy of VinDr-CXR 1.0.0 (PhysioNet), laid out like the download.

    annotations/image_labels_train.csv   image_id, rad_id, 28 labels; one row per reader
    annotations/image_labels_test.csv    image_id, 28 labels ("Other disease"); one row per image
    train/<32-hex>.dicom, test/<32-hex>.dicom

Real DICOMs: MONOCHROME2 12-bit with a window, MONOCHROME1 16-bit without one (bone dark in the
stored values), ViewPosition PA, AP, blank or absent. Faults planted on purpose (FAULTS): a
truncated DICOM, a listed image missing on disk, and a DICOM the label file does not list
(filtered, not rejected).
"""

import csv
import hashlib
import os

import numpy as np
import pydicom

from input_pipeline.builders import vindr_cxr
from tests.fakes import images as fake_images

# (short name, readers' positive classes (one set per reader row)); an empty set is "No finding".
TRAIN = [
    ("t0", [{"Cardiomegaly", "Aortic enlargement"}, {"Cardiomegaly"}, set()]),
    ("t1", [set(), set(), set()]),
    ("t2", [{"Pleural effusion", "Pneumonia"}, {"Pleural effusion", "Pneumonia"},
            {"Pleural effusion"}]),
    ("t3", [{"Nodule/Mass", "Other diseases"}, {"Other diseases"}]),  # two readers
    ("t4", [{"Tuberculosis"}]),                                       # one reader
    ("t5", [{"Lung Opacity"}, set(), set()]),
    ("t6", [{"COPD", "Emphysema"}, {"COPD", "Emphysema"}, {"COPD"}]),
    ("t7", [set(), set(), set()]),
    ("t8", [{"Pneumothorax"}, {"Pneumothorax"}, {"Pneumothorax"}]),
    ("t9", [set(), set(), {"ILD"}]),
]
# (short name, consensus positive classes)
TEST = [("s0", {"Lung Opacity", "Other diseases"}), ("s1", set()), ("s2", {"Cardiomegaly"})]
TRUNCATED = "t7"     # its DICOM is cut in half
MISSING = "t8"       # listed in image_labels_train.csv, not on disk
UNLISTED = "s9"      # test/<id>.dicom that image_labels_test.csv does not list
MONOCHROME1 = "s0"   # 16-bit MONOCHROME1 without a window (bone dark in the stored values)
VIEWS = {"t1": "", "s1": None, "s2": "AP"}  # ViewPosition ("" blank, None absent); else PA
FAULTS = {"truncated": TRUNCATED, "missing": MISSING, "unlisted": UNLISTED}


def image_id(short: str) -> str:
  """A VinDr-style image_id (32 hex digits) for a short test name."""
  return hashlib.md5(short.encode()).hexdigest()


def _names(split: str) -> tuple[str, ...]:
  """The label columns of a label file: the test file says "Other disease"."""
  return tuple("Other disease" if split == "test" and name == "Other diseases" else name
               for name in vindr_cxr.CLASS_NAMES)


def _row(positives: set[str]) -> list[str]:
  unknown = positives - set(vindr_cxr.CLASS_NAMES)
  assert not unknown, unknown
  positives = positives or {"No finding"}
  return ["1" if name in positives else "0" for name in vindr_cxr.CLASS_NAMES]


def write_image(path: str, short: str, size: tuple[int, int], seed: int) -> str:
  """Writes the DICOM of `short` (format, view and fault as in the module constants)."""
  view = VIEWS.get(short, "PA")
  if short == MONOCHROME1:
    pixels = fake_images.chest_like(*size, seed=seed, bits=16)
    fake_images.write_dicom(path, 65535 - pixels, bits_stored=16, photometric="MONOCHROME1",
                            view_position=view or "")
  else:
    pixels = fake_images.chest_like(*size, seed=seed, bits=12)
    fake_images.write_dicom(path, pixels, bits_stored=12, window=(2048, 4096),
                            view_position=view or "")
  if view is None:  # no ViewPosition element at all
    ds = pydicom.dcmread(path)
    del ds.ViewPosition
    ds.save_as(path, enforce_file_format=True)
  if short == TRUNCATED:
    fake_images.write_truncated(path, path)
  return path


def write(root: str, *, size: tuple[int, int] = (96, 80)) -> str:
  """Writes the fake download into `root` and returns root."""
  os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
  with open(os.path.join(root, vindr_cxr.LABEL_FILES["train"]), "w", newline="",
            encoding="utf-8") as f:
    writer = csv.writer(f)  # CRLF line ends, as pandas' to_csv on Windows would write
    writer.writerow(("image_id", "rad_id") + _names("train"))
    for reader in range(3):  # reader by reader, so an image's rows are not adjacent
      for short, readers in TRAIN:
        if reader < len(readers):
          writer.writerow([image_id(short), f"R{reader + 8}"] + _row(readers[reader]))
  with open(os.path.join(root, vindr_cxr.LABEL_FILES["test"]), "w", newline="",
            encoding="utf-8") as f:
    writer = csv.writer(f, lineterminator="\n")
    writer.writerow(("image_id",) + _names("test"))
    for short, positives in TEST:
      writer.writerow([image_id(short)] + _row(positives))
  shorts = [(folder, short) for folder, rows in (("train", TRAIN), ("test", TEST))
            for short, _ in rows] + [("test", UNLISTED)]
  for n, (folder, short) in enumerate(shorts):
    if short != MISSING:
      write_image(os.path.join(root, folder, image_id(short) + ".dicom"), short, size, seed=n)
  return root


def write_kaggle(root: str) -> str:
  """The Kaggle "VinBigData" copy's index file: train.csv with one box per row."""
  os.makedirs(os.path.join(root, "train"), exist_ok=True)
  with open(os.path.join(root, "train.csv"), "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f, lineterminator="\n")
    writer.writerow(["image_id", "class_name", "class_id", "rad_id", "x_min", "y_min", "x_max",
                     "y_max"])
    writer.writerow([image_id("t0"), "Cardiomegaly", "3", "R10", "691", "1375", "1653", "1831"])
    writer.writerow([image_id("t1"), "No finding", "14", "R9", "", "", "", ""])
  return root


def expected_labels(short: str) -> np.ndarray:
  """float32 [28], computed from the tables above independently of the builder (majority)."""
  for name, readers in TRAIN:
    if name == short:
      rows = np.array([[float(c) for c in _row(r)] for r in readers])
      return (rows.sum(0) > len(readers) / 2).astype(np.float32)
  return np.array([float(c) for c in _row(dict(TEST)[short])], np.float32)
