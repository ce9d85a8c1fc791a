"""NIH ChestX-ray14: 112,120 frontal chest radiographs (PNG) with 14 text-mined finding labels.

    python -m input_pipeline.prepare --dataset=cxr14 --manual_dir=/data/ChestX-ray14 \\
        --data_dir=/data/tfds [--seed=0] [--workers=16]

The download, untouched (nihcc.app.box.com/v/ChestXray-NIHCC, or the Kaggle copy
"nih-chest-xrays/data"):
  Data_Entry_2017_v2020.csv or Data_Entry_2017.csv   Image Index, Finding Labels, Follow-up #,
                                    Patient ID, Patient Age, Patient Gender, View Position, ...
                                    (the 2017 file's rows end in a comma; both are read, and
                                    Data_Entry_2017_v2020.csv when both are there)
  train_val_list.txt, test_list.txt the official split, one Image Index per line
  the images, found wherever they are up to two folders below --manual_dir: images/*.png (NIH,
  images_001.tar.gz ... images_012.tar.gz unpacked), images_001/images/*.png ...
  images_012/images/*.png (Kaggle), images/images/*.png, ...

Splits: "test" = test_list.txt (official). train_val_list.txt is split by patient (Patient ID)
into "train" (90% of its patients) and "validation" (10%) with listing.seeded_split(seed=--seed):
all the images of a patient are in the same split.

Labels: float32 [15] in CLASS_NAMES order (the 14 NIH findings in the NIH order, then
"No Finding"), 1 for each name in Finding Labels ("|"-joined, or "No Finding"), 0 otherwise. A
name that is none of these stops the preparation with a DataError naming the row.

Views: View Position (PA / AP); FRONTAL when it is blank or anything else (all ChestX-ray14
images are frontal).

Ids: image_id = Image Index (e.g. 00000001_000.png); study_id = the Image Index without .png (one
image per study); patient_id = Patient ID.

Rejected (the rejects CSV): a listed image missing from disk ("file not found") and PNGs that
cannot be decoded (truncated, ...); the few RGBA PNGs are read as grey. Filtered: images of the
Data_Entry file in neither list, and list entries without a Data_Entry row. An image in both lists
stops the preparation with a DataError.
"""

import dataclasses
import os

import numpy as np
import tensorflow_datasets as tfds

from clipmed import errors
from input_pipeline.builders import base
from input_pipeline.builders import listing

HOMEPAGE = "https://nihcc.app.box.com/v/ChestXray-NIHCC"
FINDINGS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule",
            "Pneumonia", "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis",
            "Pleural_Thickening", "Hernia")
NO_FINDING = "No Finding"
CLASS_NAMES = FINDINGS + (NO_FINDING,)
ENTRY_FILES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")  # the first found is read
TRAIN_VAL_LIST = "train_val_list.txt"
TEST_LIST = "test_list.txt"
_FRONTAL = ("PA", "AP")
_IMAGE_DEPTH = 2  # folders below manual_dir searched for the PNGs (images_001/images/x.png)


class ClipmedCxr14(base.RealDatasetBuilder):
  """NIH ChestX-ray14 radiographs with their 14 finding labels + No Finding (module docstring)."""

  VERSION = tfds.core.Version("1.0.0")
  DATASET = "cxr14"
  HOMEPAGE = HOMEPAGE
  CLASS_NAMES = CLASS_NAMES
  HAS_REPORTS = False

  def list_studies(self, manual_dir: str) -> listing.Listing:
    manual_dir = os.path.abspath(manual_dir)

    entry_path = self.find(manual_dir, ENTRY_FILES, "the Data_Entry file")
    train_val = _read_list(self.find(manual_dir, [TRAIN_VAL_LIST], "the train/validation list"))
    test = _read_list(self.find(manual_dir, [TEST_LIST], "the test list"))
    both = sorted(train_val & test)
    if both:
      raise errors.DataError(f"{self.DATASET}: {both[0]} (and {len(both) - 1} more) is in both "
                             f"{TRAIN_VAL_LIST} and {TEST_LIST}; re-download them from {HOMEPAGE}")
    entries = _read_entries(entry_path)
    found = _index_pngs(manual_dir)
    if not found.keys() & entries.keys():
      raise errors.DataError(
          f"{self.DATASET}: none of the images of {os.path.basename(entry_path)} is in "
          f"{manual_dir}: expected {os.path.join(manual_dir, 'images', '*.png')} (or "
          "images_001/images/*.png ...); unpack the images_*.tar.gz archives from "
          f"{HOMEPAGE} there")

    seeded = listing.seeded_split(
        [entries[name].patient_id for name in sorted(train_val) if name in entries],
        seed=self.builder_config.seed, fractions=(0.9, 0.1, 0.0))
    out = listing.Listing(splits={"train": [], "validation": [], "test": []},
                          notes=[f"labels from {os.path.basename(entry_path)}"])
    unlisted = len(entries.keys() - train_val - test)
    if unlisted:
      out.filtered[f"in neither {TRAIN_VAL_LIST} nor {TEST_LIST}"] = unlisted
    no_entry = len((train_val | test) - entries.keys())
    if no_entry:
      out.filtered[f"listed in {TRAIN_VAL_LIST} or {TEST_LIST} but not in "
                   f"{os.path.basename(entry_path)}"] = no_entry
    for name in sorted((train_val | test) & entries.keys()):
      entry = entries[name]
      split = "test" if name in test else seeded[entry.patient_id]
      study_id = os.path.splitext(name)[0]
      path = found.get(name)
      if path is None:
        out.rejects.append(listing.Reject(split, study_id, name,
                                          os.path.join(manual_dir, "images", name),
                                          "file not found"))
        continue
      out.splits[split].append(listing.Study(
          study_id=study_id, patient_id=entry.patient_id,
          images=[listing.ImageRef(image_id=name, path=path, view=entry.view)],
          labels=entry.labels))
    return out


@dataclasses.dataclass(frozen=True)
class _Entry:
  """One row of the Data_Entry file."""
  patient_id: str
  view: str             # as stored: PA, AP or FRONTAL
  labels: np.ndarray    # float32 [15], CLASS_NAMES order


def _read_entries(path: str) -> dict[str, _Entry]:
  """Image Index -> its patient, view and labels float32 [15].

  Raises:
    DataError: a missing column, an unknown finding name, a blank Image Index or Patient ID, or an
      image listed twice; the message names the line.
  """
  header, rows = listing.read_csv(path)
  listing.require_columns(path, header,
                          ("Image Index", "Finding Labels", "Patient ID", "View Position"))
  index_of = {name: k for k, name in enumerate(CLASS_NAMES)}
  out = {}
  for line, row in enumerate(rows, start=2):
    name, patient = row["Image Index"].strip(), (row["Patient ID"] or "").strip()
    if not name or not patient:
      raise errors.DataError(f"{path}, line {line}: the Image Index or Patient ID is blank")
    if name in out:
      raise errors.DataError(f"{path}, line {line}: {name} is listed twice")
    labels = np.zeros(len(CLASS_NAMES), np.float32)
    for finding in (row["Finding Labels"] or "").split("|"):
      k = index_of.get(finding.strip())
      if k is None:
        raise errors.DataError(
            f"{path}, line {line} ({name}): unknown finding {finding.strip()!r} in Finding "
            f"Labels {row['Finding Labels']!r}; expected {NO_FINDING!r} or names of "
            f"{list(FINDINGS)} joined by '|'")
      labels[k] = 1.0
    view = (row["View Position"] or "").strip().upper()
    out[name] = _Entry(patient, view if view in _FRONTAL else "FRONTAL", labels)
  return out


def _read_list(path: str) -> set[str]:
  """The Image Index names of a split list (one per line; blank lines ignored)."""
  with open(path, encoding="utf-8-sig") as f:
    return {line.strip() for line in f if line.strip()}


def _index_pngs(root: str) -> dict[str, str]:
  """File name -> path of the .png files in root and up to _IMAGE_DEPTH folders below it.

  Folders are visited in sorted order, shallower first; the first file of a name wins.
  """
  found, level = {}, [root]
  for depth in range(_IMAGE_DEPTH + 1):
    below = []
    for folder in level:
      with os.scandir(folder) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
          if entry.name.startswith("."):
            continue
          if entry.name.lower().endswith(".png"):
            found.setdefault(entry.name, entry.path)
          elif depth < _IMAGE_DEPTH and entry.is_dir():
            below.append(entry.path)
    level = below
  return found
