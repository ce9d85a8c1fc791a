"""A small fake copy of NIH ChestX-ray14, laid out like the NIH download or the Kaggle copy.

    Data_Entry_2017.csv (rows end in a comma) or Data_Entry_2017_v2020.csv
    train_val_list.txt, test_list.txt
    images/*.png (layout="nih") or images_001/images/*.png, images_002/images/*.png ("kaggle")

Real PNGs: 8-bit grey, and one RGBA (as a few ChestX-ray14 files are). Faults planted on purpose
(FAULTS): a truncated PNG, a listed image missing on disk, an image in neither list and a list
entry without a Data_Entry row (both filtered, not rejected).
"""

import csv
import os

from tests.fakes import images as fake_images

# (Image Index, Finding Labels, Patient ID, View Position); Patient IDs as NIH writes them.
ENTRIES = [
    ("00000001_000.png", "Cardiomegaly", "1", "PA"),
    ("00000001_001.png", "Cardiomegaly|Emphysema", "1", "PA"),
    ("00000001_002.png", "Cardiomegaly|Effusion", "1", "PA"),
    ("00000002_000.png", "No Finding", "2", "PA"),
    ("00000003_000.png", "Hernia", "3", "AP"),
    ("00000003_001.png", "Hernia|Infiltration", "3", "AP"),
    ("00000004_000.png", "Mass|Nodule|Pleural_Thickening", "4", "AP"),
    ("00000005_000.png", "No Finding", "5", "PA"),
    ("00000006_000.png", "Pneumothorax", "6", "PA"),
    ("00000007_000.png", "Atelectasis", "7", "PA"),
    ("00000008_000.png", "Edema|Pneumonia|Consolidation|Fibrosis", "8", "AP"),
    ("00000008_001.png", "Edema", "8", ""),
    ("00000009_000.png", "Effusion|Infiltration", "9", "AP"),
    ("00000010_000.png", "No Finding", "10", "PA"),
    ("00000010_001.png", "Nodule", "10", "PA"),
    ("00000011_000.png", "No Finding", "11", "PA"),
]
TEST = ["00000009_000.png", "00000010_000.png", "00000010_001.png"]
UNLISTED = "00000011_000.png"   # in Data_Entry, in neither list
NO_ENTRY = "00000099_000.png"   # in train_val_list.txt, not in Data_Entry
TRAIN_VAL = [name for name, *_ in ENTRIES if name not in TEST and name != UNLISTED] + [NO_ENTRY]
RGBA = "00000005_000.png"
TRUNCATED = "00000006_000.png"
MISSING = "00000007_000.png"
FAULTS = {"truncated": TRUNCATED, "missing": MISSING, "unlisted": UNLISTED, "no_entry": NO_ENTRY}
HEADER = ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age",
          "Patient Gender", "View Position", "OriginalImage[Width", "Height]",
          "OriginalImagePixelSpacing[x", "y]"]


def write(root: str, *, layout: str = "nih", data_entry: str = "2017",
          size: tuple[int, int] = (80, 96)) -> str:
  """Writes the fake download into `root` and returns root.

  Args:
    root: the download directory.
    layout: "nih" (images/*.png) or "kaggle" (images_001/images/*.png, images_002/images/...).
    data_entry: "2017" (Data_Entry_2017.csv, every row ending in a comma) or "v2020"
      (Data_Entry_2017_v2020.csv, no trailing comma).
    size: (height, width) of the PNGs.
  """
  if layout not in ("nih", "kaggle") or data_entry not in ("2017", "v2020"):
    raise ValueError(f"layout must be nih|kaggle, data_entry 2017|v2020; got {layout}, "
                     f"{data_entry}")
  os.makedirs(root, exist_ok=True)
  trailing = [""] if data_entry == "2017" else []
  name = "Data_Entry_2017.csv" if data_entry == "2017" else "Data_Entry_2017_v2020.csv"
  with open(os.path.join(root, name), "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f, lineterminator="\n")
    writer.writerow(HEADER + trailing)
    for follow_up, (index, findings, patient, view) in enumerate(ENTRIES):
      writer.writerow([index, findings, str(follow_up % 3), patient, "58", "M", view,
                       "2500", "2048", "0.168", "0.168"] + trailing)
  for list_name, names in (("train_val_list.txt", TRAIN_VAL), ("test_list.txt", TEST)):
    with open(os.path.join(root, list_name), "w", encoding="utf-8") as f:
      f.write("".join(f"{n}\n" for n in names))
  for n, (index, *_) in enumerate(ENTRIES):
    if index == MISSING:
      continue
    folder = ("images" if layout == "nih" else
              os.path.join(f"images_{1 + n * 2 // len(ENTRIES):03d}", "images"))
    write_image(os.path.join(root, folder, index), index, size, seed=n)
  return root


def write_image(path: str, index: str, size: tuple[int, int], seed: int) -> str:
  """Writes the PNG of `index`: RGBA, truncated or 8-bit grey as in the module constants."""
  pixels = fake_images.chest_like(*size, seed=seed)
  if index == RGBA:
    return fake_images.write_rgba_png(path, pixels)
  fake_images.write_png(path, pixels)
  if index == TRUNCATED:
    fake_images.write_truncated(path, path)
  return path
