"""VinDr-CXR 1.0.0 (PhysioNet): 18,000 frontal chest radiographs (DICOM) with image-level labels.

    python -m input_pipeline.prepare --dataset=vindr_cxr \\
        --manual_dir=/data/physionet.org/files/vindr-cxr/1.0.0 --data_dir=/data/tfds \\
        [--seed=0] [--workers=16]

The download, untouched (physionet.org/content/vindr-cxr, credentialed):
  annotations/image_labels_train.csv   image_id, rad_id, the 28 labels; one row per reader
                                       (three readers per image)
  annotations/image_labels_test.csv    image_id, the 28 labels: the readers' consensus, one row per
                                       image (its column "Other disease" is read as
                                       "Other diseases")
  train/<image_id>.dicom, test/<image_id>.dicom   the images (many MONOCHROME1, 12-16 bit)
The bounding boxes (annotations_{train,test}.csv) are not read. The Kaggle "VinBigData" copy
(train.csv with the boxes of 14 classes, unlabelled test images) is not accepted: clipmed reads
the PhysioNet release.

Splits: "test" = the official test images. The official training images are split by image_id
into "train" (90%) and "validation" (10%) with listing.seeded_split(seed=--seed); VinDr has no
patient ids, so the split cannot be patient-level.

Labels: float32 [28] in CLASS_NAMES order (the columns of the label files), all 0 / 1. Train: the
majority of the image's readers, 1 when more than half of its rows mark the class (2 of the usual
3; 1 of 1; 2 of 2). Test: the consensus row as it is.

Views: the DICOM header's ViewPosition when it is PA, AP, LATERAL or LL; FRONTAL when it is
absent, blank or anything else (VinDr-CXR images are posteroanterior chest radiographs).

Ids: image_id = study_id = VinDr's image_id (the file name without .dicom; one image per study);
patient_id = "" (VinDr has none).

Rejected (the rejects CSV): an image listed in a label file but missing from train/ or test/
("file not found"), and DICOMs that cannot be decoded (truncated, ...). Filtered: .dicom files in
train/ or test/ that the label file does not list. A label cell other than 0 / 1, a missing
column or a test image listed twice stops the preparation with a DataError naming the file.
"""

import os

import numpy as np
import pydicom
import tensorflow_datasets as tfds

from clipmed import errors
from input_pipeline.builders import base
from input_pipeline.builders import listing

HOMEPAGE = "https://physionet.org/content/vindr-cxr/"
# The label columns of annotations/image_labels_{train,test}.csv, in the files' order.
CLASS_NAMES = (
    "Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Clavicle fracture",
    "Consolidation", "Edema", "Emphysema", "Enlarged PA", "ILD", "Infiltration", "Lung Opacity",
    "Lung cavity", "Lung cyst", "Mediastinal shift", "Nodule/Mass", "Pleural effusion",
    "Pleural thickening", "Pneumothorax", "Pulmonary fibrosis", "Rib fracture", "Other lesion",
    "COPD", "Lung tumor", "Pneumonia", "Tuberculosis", "Other diseases", "No finding")
LABEL_FILES = {"train": os.path.join("annotations", "image_labels_train.csv"),
               "test": os.path.join("annotations", "image_labels_test.csv")}
SUFFIX = ".dicom"
# Column names of the download -> CLASS_NAMES (the test file says "Other disease").
_RENAMED = {"Other disease": "Other diseases"}
_VIEWS = ("PA", "AP", "LATERAL", "LL")
_KAGGLE_INDEX = "train.csv"


class ClipmedVindrCxr(base.RealDatasetBuilder):
  """VinDr-CXR chest radiographs with their 28 image-level labels (module docstring)."""

  VERSION = tfds.core.Version("1.0.0")
  DATASET = "vindr_cxr"
  HOMEPAGE = HOMEPAGE
  CLASS_NAMES = CLASS_NAMES
  HAS_REPORTS = False

  def list_studies(self, manual_dir: str) -> listing.Listing:
    manual_dir = os.path.abspath(manual_dir)
    if (not os.path.exists(os.path.join(manual_dir, LABEL_FILES["train"]))
        and os.path.isfile(os.path.join(manual_dir, _KAGGLE_INDEX))):
      raise errors.DataError(
          f"{self.DATASET}: {os.path.join(manual_dir, _KAGGLE_INDEX)} looks like the Kaggle "
          f"VinBigData copy, which clipmed does not read; clipmed reads the PhysioNet release: "
          f"expected {os.path.join(manual_dir, LABEL_FILES['train'])}. Download it from "
          f"{HOMEPAGE} and point --manual_dir at it")
    labels = {}
    for folder, name in LABEL_FILES.items():
      path = self.find(manual_dir, name, f"the {folder} label file")
      labels[folder] = _read_labels(path, consensus=folder == "test")
    on_disk = {folder: self._dicom_files(manual_dir, folder) for folder in LABEL_FILES}

    # Over the label file's ids, not the files found: a missing file moves no other image.
    seeded = listing.seeded_split(sorted(labels["train"]), seed=self.builder_config.seed,
                                  fractions=(0.9, 0.1, 0.0))
    out = listing.Listing(splits={"train": [], "validation": [], "test": []})
    for folder, label_file in LABEL_FILES.items():
      unlisted = len(on_disk[folder].keys() - labels[folder].keys())
      if unlisted:
        out.filtered[f"{folder}/*{SUFFIX} not listed in {label_file}"] = unlisted
      for image_id in sorted(labels[folder]):
        split = "test" if folder == "test" else seeded[image_id]
        path = on_disk[folder].get(image_id)
        if path is None:
          out.rejects.append(listing.Reject(
              split, image_id, image_id, os.path.join(manual_dir, folder, image_id + SUFFIX),
              "file not found"))
          continue
        out.splits[split].append(listing.Study(
            study_id=image_id, patient_id="",
            images=[listing.ImageRef(image_id=image_id, path=path, view=_view(path))],
            labels=labels[folder][image_id]))
    return out

  def _dicom_files(self, manual_dir: str, folder: str) -> dict[str, str]:
    """image_id -> path of the .dicom files in manual_dir/folder (one directory listing)."""
    root = self.find(manual_dir, folder, f"the {folder} images folder")
    with os.scandir(root) as entries:
      return {entry.name[:-len(SUFFIX)]: entry.path for entry in entries
              if entry.name.endswith(SUFFIX)}


def _read_labels(path: str, *, consensus: bool) -> dict[str, np.ndarray]:
  """image_id -> float32 [28] 0/1 labels: the consensus row, or the majority of the readers' rows.

  Raises:
    DataError: a missing column, a cell other than 0 / 1, a blank image_id, or (consensus) an
      image listed twice.
  """
  header, rows = listing.read_csv(path)
  column_of = {_RENAMED.get(name, name): name for name in header}  # canonical -> the file's
  listing.require_columns(path, column_of,
                          ("image_id",) + (() if consensus else ("rad_id",)) + CLASS_NAMES)
  columns = [column_of[name] for name in CLASS_NAMES]
  votes: dict[str, list[np.ndarray]] = {}
  for line, row in enumerate(rows, start=2):
    image_id = row.get("image_id", "").strip()
    if not image_id:
      raise errors.DataError(f"{path}, line {line}: the image_id is blank")
    if consensus and image_id in votes:
      raise errors.DataError(f"{path}, line {line}: image {image_id} is listed twice; the "
                             "consensus file has one row per image. Re-download it from "
                             f"{HOMEPAGE}")
    votes.setdefault(image_id, []).append(_zero_one_row(path, line, row, columns))
  return {image_id: (np.sum(rows_k, axis=0) * 2 > len(rows_k)).astype(np.float32)
          for image_id, rows_k in votes.items()}  # one row: itself; three: at least two


def _zero_one_row(path: str, line: int, row: dict[str, str], columns: list[str]) -> np.ndarray:
  """The label cells of a row -> int8 [28] of 0 / 1; DataError naming the cell otherwise."""
  out = np.zeros(len(columns), np.int8)
  for k, column in enumerate(columns):
    cell = (row.get(column) or "").strip()
    try:
      value = float(cell)
    except ValueError:
      value = None
    if value not in (0.0, 1.0):
      raise errors.DataError(f"{path}, line {line}, column {column!r}: {cell!r} is not a label "
                             "(0 or 1); re-download the file from " + HOMEPAGE)
    out[k] = int(value)
  return out


def _view(path: str) -> str:
  """The stored view of a VinDr DICOM: its ViewPosition if PA/AP/LATERAL/LL, else FRONTAL."""
  try:
    header = pydicom.dcmread(path, stop_before_pixels=True, force=True,
                             specific_tags=["ViewPosition"])
    value = str(header.get("ViewPosition") or "").strip().upper()
  except Exception:  # pylint: disable=broad-except
    # An unreadable header is the image decoder's to reject; the view does not matter then.
    value = ""
  return value if value in _VIEWS else "FRONTAL"
