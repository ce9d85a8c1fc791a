"""A small fake copy of the RSNA Pneumonia Detection download (Kaggle, stage 2), laid out like it.

    stage_2_train_labels.csv           patientId,x,y,width,height,Target (one row per box)
    stage_2_detailed_class_info.csv    patientId,class (one row per box too)
    stage_2_train_images/<patientId>.dcm   JPEG-baseline compressed 8-bit DICOMs
    stage_2_test_images/<patientId>.dcm    unlabelled (must be ignored)

Faults and variants planted on purpose: a truncated DICOM, a listed patient without a DICOM, a
MONOCHROME1 16-bit uncompressed DICOM, a DICOM without ViewPosition, patients with two and three
boxes (repeated rows in both files), a DICOM the label files do not list (filtered).
"""

import csv
import os
import uuid

import pydicom

from tests.fakes import images as fake_images

LABELS_CSV = "stage_2_train_labels.csv"
CLASSES_CSV = "stage_2_detailed_class_info.csv"
OPACITY, NORMAL, NOT_NORMAL = "Lung Opacity", "Normal", "No Lung Opacity / Not Normal"
# (short name, class, number of boxes, ViewPosition, kind); kind: "jpeg" (JPEG baseline,
# MONOCHROME2), "mono1" (16-bit MONOCHROME1), "truncated", "missing", "no_view" (tag absent).
PATIENTS = [
    ("p01", OPACITY, 2, "PA", "jpeg"),
    ("p02", NORMAL, 0, "AP", "jpeg"),
    ("p03", NOT_NORMAL, 0, "PA", "jpeg"),
    ("p04", OPACITY, 1, "AP", "jpeg"),
    ("p05", NORMAL, 0, "PA", "mono1"),
    ("p06", NOT_NORMAL, 0, "AP", "truncated"),
    ("p07", NORMAL, 0, "PA", "missing"),
    ("p08", OPACITY, 3, "", "no_view"),
    ("p09", NORMAL, 0, "PA", "jpeg"),
    ("p10", NOT_NORMAL, 0, "PA", "jpeg"),
    ("p11", NORMAL, 0, "AP", "jpeg"),
    ("p12", OPACITY, 1, "PA", "jpeg"),
]
TRUNCATED, MISSING, MONO1, NO_VIEW, TWO_BOXES = "p06", "p07", "p05", "p08", "p01"
UNLISTED = "u01"  # a DICOM in stage_2_train_images/ that no label file lists
TEST_ONLY = "t01"  # in stage_2_test_images/


def patient_id(short: str) -> str:
  """The RSNA patientId (a UUID) of a short test name."""
  return str(uuid.uuid5(uuid.NAMESPACE_URL, f"rsna/{short}"))


def label_rows() -> tuple[list[list[str]], list[list[str]]]:
  """The rows of the two label files (without headers), as the official files have them."""
  labels, classes = [], []
  for k, (short, name, boxes, _, _) in enumerate(PATIENTS):
    pid = patient_id(short)
    for b in range(max(boxes, 1)):
      box = ([f"{100.0 + 10 * b + k:.1f}", f"{150.0 + b:.1f}", "213.0", "379.0"] if boxes
             else ["", "", "", ""])
      labels.append([pid] + box + [str(int(boxes > 0))])
      classes.append([pid, name])
  return labels, classes


def write_csv(path: str, header: list[str], rows: list[list[str]]) -> None:
  with open(path, "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)


def write_image(path: str, seed: int, size: tuple[int, int], kind: str = "jpeg",
                view: str = "PA", patient: str = "") -> None:
  """One DICOM of the download: `kind` as in PATIENTS (not "missing")."""
  if kind == "mono1":
    bone_bright = fake_images.chest_like(*size, seed=seed, bits=16)
    fake_images.write_dicom(path, 65535 - bone_bright, bits_stored=16, photometric="MONOCHROME1",
                            modality="CR", view_position=view, patient_id=patient)
    return
  fake_images.write_dicom(path, fake_images.chest_like(*size, seed=seed), bits_stored=8,
                          compressed="jpeg_baseline", modality="CR", view_position=view,
                          patient_id=patient)
  if kind == "truncated":
    fake_images.write_truncated(path, path)
  elif kind == "no_view":
    ds = pydicom.dcmread(path)
    del ds.ViewPosition
    ds.save_as(path)


def write(root: str, *, size: tuple[int, int] = (96, 80)) -> str:
  """Writes the fake download into `root` (H x W images of `size`). Returns root."""
  images_dir = os.path.join(root, "stage_2_train_images")
  os.makedirs(images_dir, exist_ok=True)
  labels, classes = label_rows()
  write_csv(os.path.join(root, LABELS_CSV), ["patientId", "x", "y", "width", "height", "Target"],
            labels)
  write_csv(os.path.join(root, CLASSES_CSV), ["patientId", "class"], classes)
  for k, (short, _, _, view, kind) in enumerate(PATIENTS):
    path = os.path.join(images_dir, f"{patient_id(short)}.dcm")
    if kind != "missing":
      write_image(path, k, size, kind, view, patient_id(short))
  write_image(os.path.join(images_dir, f"{patient_id(UNLISTED)}.dcm"), 100, size,
              patient=patient_id(UNLISTED))
  write_image(os.path.join(root, "stage_2_test_images", f"{patient_id(TEST_ONLY)}.dcm"), 101,
              size, patient=patient_id(TEST_ONLY))
  return root
