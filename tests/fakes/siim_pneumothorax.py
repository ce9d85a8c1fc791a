"""A small fake copy of the SIIM-ACR Pneumothorax download (Kaggle), laid out like it.

    train-rle.csv     "ImageId, EncodedPixels" (with the space), one row per mask, -1 / " -1"
    dicom-images-train/<StudyInstanceUID>/<SeriesInstanceUID>/<ImageId>.dcm
    dicom-images-test/<StudyInstanceUID>/<SeriesInstanceUID>/<ImageId>.dcm   (must be ignored)

Faults and variants planted on purpose: a truncated DICOM, an ImageId without a DICOM, a
MONOCHROME1 16-bit uncompressed DICOM, a blank ViewPosition, an image with two masks (two rows), a
patient with two images, " -1" and "-1" cells, a DICOM that train-rle.csv does not list
(filtered); `header_space=False` writes the header without the space.
"""

import os

from tests.fakes import images as fake_images

RLE_CSV = "train-rle.csv"
MASK = "175349 7 1013 12 1009 17"
# (short name, patient, EncodedPixels cells (one row each), ViewPosition, kind); kind: "jpeg"
# (JPEG baseline, MONOCHROME2), "mono1" (16-bit MONOCHROME1), "truncated", "missing".
IMAGES = [
    ("i01", "A", [MASK, "10 20"], "PA", "jpeg"),
    ("i02", "A", [" -1"], "PA", "jpeg"),
    ("i03", "B", ["-1"], "AP", "jpeg"),
    ("i04", "C", [MASK], "PA", "mono1"),
    ("i05", "D", [" -1"], "AP", "truncated"),
    ("i06", "E", ["-1"], "PA", "missing"),
    ("i07", "F", [MASK], "", "jpeg"),
    ("i08", "G", ["-1"], "PA", "jpeg"),
    ("i09", "H", [" -1"], "PA", "jpeg"),
    ("i10", "I", [MASK], "AP", "jpeg"),
    ("i11", "J", ["-1"], "PA", "jpeg"),
    ("i12", "K", ["-1"], "PA", "jpeg"),
]
TWO_MASKS, TRUNCATED, MISSING, MONO1, BLANK_VIEW = "i01", "i05", "i06", "i04", "i07"
UNLISTED = "u01"  # a DICOM in dicom-images-train/ that train-rle.csv does not list
TEST_ONLY = "t01"  # in dicom-images-test/


def _uid(kind: int, short: str) -> str:
  """A SIIM-style UID; kind 2 = study, 3 = series, 4 = instance (the ImageId)."""
  n = int.from_bytes(short.encode(), "big") % 10000
  return f"1.2.276.0.7230010.3.1.{kind}.8323329.{n}.1517875162.{300000 + n}"


def image_id(short: str) -> str:
  return _uid(4, short)


def study_id(short: str) -> str:
  return _uid(2, short)


def patient_id(patient: str) -> str:
  """The PatientID tag of a patient letter (a UUID-like string, as in the download)."""
  return f"{ord(patient):08x}-0b1e-4c2d-9e3f-5a6b7c8d9e0f"


def write_image(images_dir: str, short: str, seed: int, size: tuple[int, int],
                kind: str = "jpeg", view: str = "PA", patient: str = "A") -> str:
  """One DICOM under images_dir/<study>/<series>/<ImageId>.dcm; `kind` as in IMAGES."""
  path = os.path.join(images_dir, study_id(short), _uid(3, short), f"{image_id(short)}.dcm")
  uids = dict(study_uid=study_id(short), series_uid=_uid(3, short), sop_uid=image_id(short),
              patient_id=patient_id(patient), view_position=view, modality="CR")
  if kind == "mono1":
    bone_bright = fake_images.chest_like(*size, seed=seed, bits=16)
    return fake_images.write_dicom(path, 65535 - bone_bright, bits_stored=16,
                                   photometric="MONOCHROME1", **uids)
  fake_images.write_dicom(path, fake_images.chest_like(*size, seed=seed), bits_stored=8,
                          compressed="jpeg_baseline", **uids)
  if kind == "truncated":
    fake_images.write_truncated(path, path)
  return path


def write(root: str, *, header_space: bool = True, size: tuple[int, int] = (96, 80)) -> str:
  """Writes the fake download into `root` (H x W images of `size`). Returns root."""
  os.makedirs(root, exist_ok=True)
  lines = ["ImageId, EncodedPixels" if header_space else "ImageId,EncodedPixels"]
  images_dir = os.path.join(root, "dicom-images-train")
  for k, (short, patient, cells, view, kind) in enumerate(IMAGES):
    # Kaggle's file writes a space before the masks too: "ImageId, 175349 7 ...".
    lines += [f"{image_id(short)},{cell if cell.startswith(' ') or cell == '-1' else ' ' + cell}"
              for cell in cells]
    if kind != "missing":
      write_image(images_dir, short, k, size, kind, view, patient)
  with open(os.path.join(root, RLE_CSV), "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
  write_image(images_dir, UNLISTED, 100, size, patient="Z")
  write_image(os.path.join(root, "dicom-images-test"), TEST_ONLY, 101, size, patient="Y")
  return root
