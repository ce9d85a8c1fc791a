"""SIIM-ACR Pneumothorax Segmentation (Kaggle): frontal radiographs, pneumothorax yes / no.

    python -m input_pipeline.prepare --dataset=siim_pneumothorax --manual_dir=/data/siim \\
        --data_dir=/data/tfds [--workers=16]

The download, untouched (--manual_dir is the folder holding):
  train-rle.csv    header "ImageId, EncodedPixels" (with the space; also accepted without), one
                   row per mask: run-length pairs, or -1 (also " -1") for no pneumothorax
  dicom-images-train/<StudyInstanceUID>/<SeriesInstanceUID>/<ImageId>.dcm   the images (ImageId
                   = SOPInstanceUID; JPEG-baseline compressed 1024 px DICOMs)
dicom-images-test/ has no labels and is not read. The DICOMs are found by walking
dicom-images-train once, so the folder names are not checked.

Examples: one per ImageId (image_id = ImageId, study_id = its StudyInstanceUID folder, patient_id
= the DICOM PatientID). Masks are not stored.
Labels: CLASS_NAMES = ("Pneumothorax",), 1 when any row of the image has a mask (not -1), else 0.
Split: no labelled official test set, so a seeded patient-level 70/15/15 split (GLoRIA's protocol):
listing.seeded_split with --seed over the PatientIDs read from the headers of the labelled DICOMs
(an image with a blank PatientID is its own patient).
View: the DICOM ViewPosition (PA or AP), FRONTAL when absent or blank.
Rejected (rejects CSV): an ImageId of train-rle.csv without a DICOM ("file not found") or with an
unreadable header, and DICOMs that cannot be decoded (truncated, corrupt). Such an image has no
known patient, so its reject is counted in a split drawn by listing.seeded_split over these
ImageIds (each split's reject rate stays proportional). Filtered: DICOMs that train-rle.csv does
not list ("not in train-rle.csv"), and a second file with the same ImageId (the first found by
a walk in sorted order is used).
"""

import os

import numpy as np
import tensorflow_datasets as tfds

from clipmed import errors
from input_pipeline.builders import base
from input_pipeline.builders import dicom_header
from input_pipeline.builders import listing

HOMEPAGE = "https://www.kaggle.com/competitions/siim-acr-pneumothorax-segmentation"
RLE_CSV = "train-rle.csv"
IMAGES_DIR = "dicom-images-train"
CLASS_NAMES = ("Pneumothorax",)
SPLITS = ("train", "validation", "test")
NO_MASK = "-1"


class ClipmedSiimPneumothorax(base.RealDatasetBuilder):
  """SIIM-ACR Pneumothorax images with pneumothorax labels (module docstring)."""

  VERSION = tfds.core.Version("1.0.0")
  DATASET = "siim_pneumothorax"
  HOMEPAGE = HOMEPAGE
  CLASS_NAMES = CLASS_NAMES
  HAS_REPORTS = False

  def list_studies(self, manual_dir: str) -> listing.Listing:
    csv_path = self.find(manual_dir, RLE_CSV, "the mask file")
    images_dir = self.find(manual_dir, IMAGES_DIR, "the training image folder")
    positive = _read_masks(csv_path)
    out = listing.Listing(splits={split: [] for split in SPLITS})
    files = _find_dicoms(images_dir, out.filtered)

    found, orphans = [], []  # (image_id, study_id, path, patient, view); (image_id, path, reason)
    for image_id in sorted(positive):
      if image_id not in files:
        orphans.append((image_id, os.path.join(images_dir, "*", "*", f"{image_id}.dcm"),
                        "file not found"))
        continue
      study, path = files[image_id]
      header = dicom_header.read_tags(path, ("PatientID", "ViewPosition"))
      if header is None:
        orphans.append((image_id, path, "DICOM header is unreadable"))
        continue
      found.append((image_id, study, path, header["PatientID"] or image_id,
                    dicom_header.frontal_view(header["ViewPosition"])))
    unlisted = len(set(files) - set(positive))
    if unlisted:
      out.filtered[f"not in {RLE_CSV}"] = unlisted

    seed = self.builder_config.seed
    split_of = listing.seeded_split([patient for _, _, _, patient, _ in found], seed=seed)
    orphan_split = listing.seeded_split([image_id for image_id, _, _ in orphans], seed=seed)
    out.rejects += [listing.Reject(orphan_split[image_id], "", image_id, path, reason)
                    for image_id, path, reason in orphans]
    for image_id, study, path, patient, view in sorted(found, key=lambda f: (f[1], f[0])):
      out.splits[split_of[patient]].append(listing.Study(
          study_id=study, patient_id=patient,
          labels=np.array([positive[image_id]], np.float32),
          images=[listing.ImageRef(image_id=image_id, path=path, view=view)]))
    return out


def _read_masks(path: str) -> dict[str, float]:
  """ImageId -> 1.0 when any of its rows has a mask, else 0.0."""
  header, rows = listing.read_csv(path)  # strips the space of " EncodedPixels"
  listing.require_columns(path, header, ("ImageId", "EncodedPixels"))
  positive = {}
  for line, row in enumerate(rows, start=2):
    image_id, mask = row["ImageId"].strip(), (row["EncodedPixels"] or "").strip()
    if not image_id or not _is_mask(mask):
      raise errors.DataError(f"{path}, line {line}: expected an ImageId and EncodedPixels -1 or "
                             f"run-length pairs, got {image_id!r}, {mask[:40]!r}; re-download "
                             f"the file from {HOMEPAGE}")
    positive[image_id] = max(positive.get(image_id, 0.0), float(mask != NO_MASK))
  return positive


def _is_mask(mask: str) -> bool:
  """Whether an EncodedPixels cell is -1 or an even number of non-negative integers."""
  if mask == NO_MASK:
    return True
  numbers = mask.split()
  return bool(numbers) and len(numbers) % 2 == 0 and all(n.isdigit() for n in numbers)


def _find_dicoms(images_dir: str, filtered: dict[str, int]) -> dict[str, tuple[str, str]]:
  """ImageId -> (study_id = its folder under images_dir, path), walking images_dir once.

  The walk visits folders and files in sorted order; a second file of the same ImageId is
  counted in `filtered`. A file directly in images_dir is its own study.

  Raises:
    DataError: images_dir holds no .dcm file.
  """
  files, duplicates = {}, 0
  for folder, subfolders, names in os.walk(images_dir):
    subfolders.sort()
    for name in sorted(names):
      if not name.lower().endswith(".dcm"):
        continue
      image_id = name[:-len(".dcm")]
      relative = os.path.relpath(folder, images_dir)
      study = relative.split(os.sep)[0] if relative != os.curdir else image_id
      if image_id in files:
        duplicates += 1
      else:
        files[image_id] = (study, os.path.join(folder, name))
  if duplicates:
    filtered["a second file of the same ImageId"] = duplicates
  if not files:
    raise errors.DataError(f"siim_pneumothorax: no .dcm file under {images_dir}; expected "
                           f"{os.path.join(images_dir, 'STUDY_UID/SERIES_UID/IMAGE_ID.dcm')}. "
                           f"Unpack the full download from {HOMEPAGE}")
  return files
