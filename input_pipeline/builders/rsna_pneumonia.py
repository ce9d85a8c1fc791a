"""RSNA Pneumonia Detection Challenge (Kaggle, stage 2 data): frontal radiographs, three classes.

    python -m input_pipeline.prepare --dataset=rsna_pneumonia \\
        --manual_dir=/data/rsna-pneumonia-detection-challenge --data_dir=/data/tfds [--workers=16]

The download, untouched (kaggle competitions download -c rsna-pneumonia-detection-challenge,
then unzip; --manual_dir is the folder holding):
  stage_2_train_labels.csv           patientId,x,y,width,height,Target: one row per box, one row
                                     with an empty box and Target 0 for a patient without one
  stage_2_detailed_class_info.csv    patientId,class (Lung Opacity / Normal /
                                     No Lung Opacity / Not Normal), also one row per box
  stage_2_train_images/<patientId>.dcm   the images (DICOM, mostly JPEG-baseline compressed)
stage_2_test_images/ has no labels and is not read.

Examples: one per patientId (its rows de-duplicated); image_id = study_id = patient_id =
patientId. Boxes are not stored.
Labels (CLASS_NAMES order, all 0 or 1): Pneumonia = 1 when any row of the patient has Target 1
(the class "Lung Opacity"); Normal = class "Normal"; No Lung Opacity / Not Normal = that class.
RSNA-ab (pneumonia vs. other abnormal, as in the paper) is the examples with Normal == 0.
Split: there is no labelled official test set, so a seeded patient-level 70/15/15 split (GLoRIA's
protocol): listing.seeded_split over the patientIds of the label files with --seed. It depends
on the label files only, not on which images are on disk.
View: the DICOM ViewPosition (PA or AP), read from the header at listing; FRONTAL when absent or
blank (every RSNA image is frontal).
Rejected (rejects CSV): a listed patient whose DICOM is missing ("file not found"), and DICOMs
that cannot be decoded (truncated, corrupt). Filtered: DICOMs in stage_2_train_images/ that the
label files do not list. The build stops with a DataError when the two label files disagree (a
patientId in one file only; Target 1 without the class "Lung Opacity" or the other way round; two
classes for one patient) or a cell is not an allowed value: both files come from one release.
"""

import os

import numpy as np
import tensorflow_datasets as tfds

from clipmed import errors
from input_pipeline.builders import base
from input_pipeline.builders import dicom_header
from input_pipeline.builders import listing

HOMEPAGE = "https://www.kaggle.com/competitions/rsna-pneumonia-detection-challenge"
LABELS_CSV = "stage_2_train_labels.csv"
CLASSES_CSV = "stage_2_detailed_class_info.csv"
IMAGES_DIR = "stage_2_train_images"
OPACITY, NORMAL, NOT_NORMAL = "Lung Opacity", "Normal", "No Lung Opacity / Not Normal"
CLASS_NAMES = ("Pneumonia", NORMAL, NOT_NORMAL)
SPLITS = ("train", "validation", "test")


class ClipmedRsnaPneumonia(base.RealDatasetBuilder):
  """RSNA Pneumonia Detection images with pneumonia / normal / other-abnormal labels (module
  docstring)."""

  VERSION = tfds.core.Version("1.0.0")
  DATASET = "rsna_pneumonia"
  HOMEPAGE = HOMEPAGE
  CLASS_NAMES = CLASS_NAMES
  HAS_REPORTS = False

  def list_studies(self, manual_dir: str) -> listing.Listing:
    labels_path = self.find(manual_dir, LABELS_CSV, "the label file")
    classes_path = self.find(manual_dir, CLASSES_CSV, "the class file")
    images_dir = self.find(manual_dir, IMAGES_DIR, "the training image folder")
    targets = _read_targets(labels_path)
    classes = _read_classes(classes_path)
    _check_agreement(labels_path, targets, classes_path, classes)

    split_of = listing.seeded_split(list(targets), seed=self.builder_config.seed)
    on_disk = {name[:-len(".dcm")] for name in os.listdir(images_dir) if name.endswith(".dcm")}
    out = listing.Listing(splits={split: [] for split in SPLITS})
    unlisted = len(on_disk - set(targets))
    if unlisted:
      out.filtered[f"not in {LABELS_CSV}"] = unlisted
    for patient in sorted(targets):
      split, path = split_of[patient], os.path.join(images_dir, f"{patient}.dcm")
      if patient not in on_disk:
        out.rejects.append(listing.Reject(split, patient, patient, path, "file not found"))
        continue
      # An unreadable header is left to the image decoder, which rejects the file with the reason.
      header = dicom_header.read_tags(path, ("ViewPosition",)) or {"ViewPosition": ""}
      labels = np.array([targets[patient], classes[patient] == NORMAL,
                         classes[patient] == NOT_NORMAL], np.float32)
      out.splits[split].append(listing.Study(
          study_id=patient, patient_id=patient, labels=labels,
          images=[listing.ImageRef(image_id=patient, path=path,
                                   view=dicom_header.frontal_view(header["ViewPosition"]))]))
    return out


def _read_targets(path: str) -> dict[str, float]:
  """patientId -> 1.0 when any of its rows has Target 1, else 0.0."""
  header, rows = listing.read_csv(path)
  listing.require_columns(path, header, ("patientId", "Target"))
  targets = {}
  for line, row in enumerate(rows, start=2):
    patient, target = row["patientId"].strip(), (row["Target"] or "").strip()
    if not patient or target not in ("0", "1", "0.0", "1.0"):
      raise errors.DataError(f"{path}, line {line}: expected a patientId and Target 0 or 1, got "
                             f"{patient!r}, {target!r}; re-download the file from {HOMEPAGE}")
    targets[patient] = max(targets.get(patient, 0.0), float(target))
  return targets


def _read_classes(path: str) -> dict[str, str]:
  """patientId -> its class (all rows of a patient must name the same class)."""
  header, rows = listing.read_csv(path)
  listing.require_columns(path, header, ("patientId", "class"))
  classes = {}
  for line, row in enumerate(rows, start=2):
    patient, name = row["patientId"].strip(), (row["class"] or "").strip()
    if name not in (OPACITY, NORMAL, NOT_NORMAL):
      raise errors.DataError(f"{path}, line {line}: class {name!r} of {patient!r} is not one of "
                             f"{[OPACITY, NORMAL, NOT_NORMAL]}; re-download the file from "
                             f"{HOMEPAGE}")
    if classes.setdefault(patient, name) != name:
      raise errors.DataError(f"{path}, line {line}: patientId {patient} has two classes, "
                             f"{classes[patient]!r} and {name!r}; re-download the file from "
                             f"{HOMEPAGE}")
  return classes


def _check_agreement(labels_path: str, targets: dict[str, float], classes_path: str,
                     classes: dict[str, str]) -> None:
  """DataError naming the first patientId on which the two label files disagree."""
  for patient in sorted(set(targets) ^ set(classes)):
    where, other = ((labels_path, classes_path) if patient in targets
                    else (classes_path, labels_path))
    raise errors.DataError(f"rsna_pneumonia: patientId {patient} is in {where} but not in "
                           f"{other}; both must come from the same download ({HOMEPAGE})")
  for patient in sorted(targets):
    if (targets[patient] == 1.0) != (classes[patient] == OPACITY):
      raise errors.DataError(
          f"rsna_pneumonia: patientId {patient} has Target {targets[patient]:.0f} in "
          f"{labels_path} but class {classes[patient]!r} in {classes_path} (Target 1 is exactly "
          f"the class {OPACITY!r}); both must come from the same download ({HOMEPAGE})")
