"""A small fake copy of CheXpert-v1.0-small, laid out like the download.

    CheXpert-v1.0-small/train.csv, valid.csv     Path, Sex, Age, Frontal/Lateral, AP/PA, 14 labels
    CheXpert-v1.0-small/{train,valid}/patientN/studyN/viewN_{frontal,lateral}.jpg

The train rows exercise the 5x200 rule (FIVE_BY_200: the images that qualify, by class; every
other train row fails it for the reason in its comment). Faults planted on purpose: a truncated
JPEG (TRUNCATED) and a listed image missing on disk (MISSING).
"""

import csv
import os

from clipmed.report import chexpert
from tests.fakes import images as fake_images

TOP = "CheXpert-v1.0-small"
# The CSV's label columns, in the order of the download (not clipmed's order).
LABEL_COLUMNS = ("No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity",
                 "Lung Lesion", "Edema", "Consolidation", "Pneumonia", "Atelectasis",
                 "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture",
                 "Support Devices")
assert sorted(LABEL_COLUMNS) == sorted(chexpert.CATEGORIES)

# (file below TOP, Frontal/Lateral, AP/PA, labels {name: cell})
TRAIN = [
    ("train/patient00001/study1/view1_frontal.jpg", "Frontal", "AP",
     {"Atelectasis": "1.0"}),                                           # 5x200 Atelectasis
    ("train/patient00002/study1/view1_frontal.jpg", "Frontal", "PA",
     {"Atelectasis": "1.0", "Cardiomegaly": "0.0", "Lung Opacity": "1.0"}),  # 5x200 Atelectasis
    ("train/patient00003/study1/view1_frontal.jpg", "Frontal", "AP",
     {"Atelectasis": "1.0", "Cardiomegaly": "1.0"}),                    # two of the five
    ("train/patient00004/study1/view1_frontal.jpg", "Frontal", "AP",
     {"Atelectasis": "1.0", "Edema": "-1.0"}),                          # uncertain Edema
    ("train/patient00005/study1/view1_lateral.jpg", "Lateral", "",
     {"Atelectasis": "1.0"}),                                           # lateral
    ("train/patient00006/study1/view1_frontal.jpg", "Frontal", "AP",
     {"Cardiomegaly": "1.0", "Support Devices": "1.0"}),                # 5x200 Cardiomegaly
    ("train/patient00006/study1/view2_lateral.jpg", "Lateral", "",
     {"Cardiomegaly": "1.0", "Support Devices": "1.0"}),                # its study's lateral
    ("train/patient00007/study1/view1_frontal.jpg", "Frontal", "PA",
     {"Cardiomegaly": "1.0", "Pneumonia": "1.0"}),                      # 5x200 Cardiomegaly
    ("train/patient00008/study1/view1_frontal.jpg", "Frontal", "AP",
     {"Cardiomegaly": "-1.0"}),                                         # uncertain, no positive
    ("train/patient00009/study1/view1_frontal.jpg", "Frontal", "AP",
     {"Consolidation": "1.0", "Atelectasis": "0.0"}),                   # 5x200 Consolidation
    ("train/patient00009/study2/view1_frontal.jpg", "Frontal", "AP",
     {"Consolidation": "1.0"}),                                         # 5x200 Consolidation
    ("train/patient00010/study1/view1_frontal.jpg", "Frontal", "PA",
     {"Edema": "1.0", "Pneumothorax": "-1.0"}),                         # 5x200 Edema
    ("train/patient00011/study1/view1_frontal.jpg", "Frontal", "AP",
     {"Pleural Effusion": "1.0"}),                                      # 5x200 Pleural Effusion
    ("train/patient00011/study1/view2_frontal.jpg", "Frontal", "AP",
     {"Pleural Effusion": "1.0"}),                                      # 5x200 Pleural Effusion
    ("train/patient00012/study1/view1_frontal.jpg", "Frontal", "",
     {"No Finding": "1.0"}),                                            # none of the five
    ("train/patient00013/study1/view1_frontal.jpg", "Frontal", "PA",
     {"No Finding": "1.0"}),                                            # truncated JPEG
    ("train/patient00014/study1/view1_frontal.jpg", "Frontal", "PA",
     {"No Finding": "1.0"}),                                            # missing on disk
]
_ZERO = {name: "0.0" for name in LABEL_COLUMNS}
VALID = [
    ("valid/patient64541/study1/view1_frontal.jpg", "Frontal", "AP",
     {**_ZERO, "Cardiomegaly": "1.0", "Edema": "1.0"}),
    ("valid/patient64541/study1/view2_lateral.jpg", "Lateral", "LL",
     {**_ZERO, "Cardiomegaly": "1.0", "Edema": "1.0"}),
    ("valid/patient64542/study1/view1_frontal.jpg", "Frontal", "PA",
     {**_ZERO, "No Finding": "1.0"}),
]
FIVE_BY_200 = {
    "Atelectasis": ["train/patient00001/study1/view1_frontal.jpg",
                    "train/patient00002/study1/view1_frontal.jpg"],
    "Cardiomegaly": ["train/patient00006/study1/view1_frontal.jpg",
                     "train/patient00007/study1/view1_frontal.jpg"],
    "Consolidation": ["train/patient00009/study1/view1_frontal.jpg",
                      "train/patient00009/study2/view1_frontal.jpg"],
    "Edema": ["train/patient00010/study1/view1_frontal.jpg"],
    "Pleural Effusion": ["train/patient00011/study1/view1_frontal.jpg",
                         "train/patient00011/study1/view2_frontal.jpg"],
}
COMPANION = "train/patient00006/study1/view2_lateral.jpg"  # left out of train with its study
TRUNCATED = "train/patient00013/study1/view1_frontal.jpg"
MISSING = "train/patient00014/study1/view1_frontal.jpg"


def path(relative: str, top: str = TOP) -> str:
  """The Path cell (and image_id) of a file below the top folder."""
  return f"{top}/{relative}"


def _write_csv(file: str, rows) -> None:
  with open(file, "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f, lineterminator="\n")
    writer.writerow(["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *LABEL_COLUMNS])
    for n, (relative, side, projection, labels) in enumerate(rows):
      writer.writerow([path(relative), "Female" if n % 2 else "Male", str(40 + n), side,
                       projection, *(labels.get(name, "") for name in LABEL_COLUMNS)])


def write(root: str, *, size: tuple[int, int] = (96, 80)) -> str:
  """Writes the fake download into root/CheXpert-v1.0-small; returns that folder."""
  top = os.path.join(root, TOP)
  os.makedirs(top, exist_ok=True)
  _write_csv(os.path.join(top, "train.csv"), TRAIN)
  _write_csv(os.path.join(top, "valid.csv"), VALID)
  for n, (relative, *_) in enumerate(TRAIN + VALID):
    if relative == MISSING:
      continue
    file = fake_images.write_jpeg(os.path.join(top, relative),
                                  fake_images.chest_like(*size, seed=n))
    if relative == TRUNCATED:
      fake_images.write_truncated(file, file)
  return top


def write_five_by_200(file: str, relatives, top: str = "CheXpert-v1.0") -> str:
  """A user's 5x200 list like GLoRIA's chexpert_5x200.csv (Path + labels; paths of the full
  CheXpert-v1.0 download by default)."""
  by_relative = {relative: labels for relative, _, _, labels in TRAIN}
  with open(file, "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f)
    writer.writerow(["Path", *LABEL_COLUMNS])
    for relative in relatives:
      labels = by_relative.get(relative, {})
      writer.writerow([path(relative, top), *(labels.get(name, "") for name in LABEL_COLUMNS)])
  return file
