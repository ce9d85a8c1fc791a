"""MIMIC-CXR-JPG 2.0 / 2.1 images with the free-text reports of MIMIC-CXR.

    python -m input_pipeline.prepare --dataset=mimic_cxr --manual_dir=/data/mimic-cxr-jpg/2.1.0 \\
        --data_dir=/data/tfds [--reports=/data/mimic-cxr-reports.zip] [--views=all] \\
        [--labels=labeler] [--workers=16]

The download, untouched (physionet.org/content/mimic-cxr-jpg, credentialed):
  mimic-cxr-2.0.0-{metadata,split,chexpert}.csv(.gz)   dicom_id / study / subject / split / labels
  files/pXX/pSUBJECT/sSTUDY/<dicom_id>.jpg             the images
and the reports of MIMIC-CXR (physionet.org/content/mimic-cxr): mimic-cxr-reports.zip, or its
unzipped files/pXX/pSUBJECT/sSTUDY.txt tree, found in manual_dir unless --reports names the zip
or the folder that holds files/.

Official splits (train / validate -> validation / test). Frontal images only (ViewPosition PA or
AP) unless --views=all; each image is one example, the images of a study share its report and
study_id. Labels: mimic-cxr-2.0.0-chexpert.csv (the CheXpert labeler's output on the report) with
--labels=dataset (default), clipmed's labeler with --labels=labeler; a study missing from the
label file gets the labeler's. Report: FINDINGS and IMPRESSION of the report text (a report with
neither keeps its text outside the indication / technique / comparison sections as findings).
"""

import glob
import itertools
import os
import zipfile

import numpy as np
import tensorflow_datasets as tfds

from clipmed import errors
from clipmed.report import chexpert
from clipmed.report import sections
from input_pipeline.builders import base
from input_pipeline.builders import listing

HOMEPAGE = "https://physionet.org/content/mimic-cxr-jpg/"
REPORTS_HOMEPAGE = "https://physionet.org/content/mimic-cxr/"
SPLITS = {"train": "train", "validate": "validation", "test": "test"}
FRONTAL = ("PA", "AP")
_PREFIX = "mimic-cxr-2.0.0-"


class ClipmedMimicCxr(base.RealDatasetBuilder):
  """MIMIC-CXR-JPG images with their MIMIC-CXR reports and CheXpert labels (module docstring)."""

  VERSION = tfds.core.Version("1.0.0")
  DATASET = "mimic_cxr"
  HOMEPAGE = HOMEPAGE
  OPTIONS = {"views": ("frontal", ("frontal", "all")),
             "labels": ("dataset", ("dataset", "labeler")),
             "reports": ("", None)}

  def list_studies(self, manual_dir: str) -> listing.Listing:
    def find(stem, what):
      return self.find(manual_dir, [f"{_PREFIX}{stem}.csv.gz", f"{_PREFIX}{stem}.csv"], what)
    split_path, meta_path = find("split", "the split file"), find("metadata", "the metadata file")
    label_path = find("chexpert", "the CheXpert label file")
    reports = _Reports(self.options["reports"] or manual_dir)

    header, rows = listing.read_csv(split_path)
    listing.require_columns(split_path, header, ("dicom_id", "study_id", "subject_id", "split"))
    header, meta = listing.read_csv(meta_path)
    listing.require_columns(meta_path, header, ("dicom_id", "ViewPosition"))
    view_of = {m["dicom_id"]: m["ViewPosition"].strip() for m in meta}
    labels_of = _read_labels(label_path)

    out = listing.Listing(splits={name: [] for name in SPLITS.values()},
                          notes=[f"reports from {reports.where}"])
    studies: dict[tuple[str, str, str], list[listing.ImageRef]] = {}
    for row in rows:
      split = SPLITS.get(row["split"].strip())
      if split is None:
        continue
      subject, study, dicom = row["subject_id"].strip(), row["study_id"].strip(), row["dicom_id"]
      view = view_of.get(dicom, "")
      if self.options["views"] == "frontal" and view not in FRONTAL:
        reason = f"view {view or 'unknown'} is not frontal (--views=all keeps it)"
        out.filtered[reason] = out.filtered.get(reason, 0) + 1
        continue
      path = os.path.join(manual_dir, "files", f"p{subject[:2]}", f"p{subject}", f"s{study}",
                          f"{dicom}.jpg")
      studies.setdefault((split, subject, study), []).append(
          listing.ImageRef(image_id=dicom, path=path, view=view))

    for (split, subject, study), refs in sorted(studies.items()):
      present = [r for r in refs if os.path.exists(r.path)]
      out.rejects += [listing.Reject(split, study, r.image_id, r.path, "file not found")
                      for r in refs if r not in present]
      if not present:
        continue
      text, problem = reports.read(subject, study)
      if problem:
        out.rejects += [listing.Reject(split, study, r.image_id, r.path, problem)
                        for r in present]
        continue
      found = sections.split_sections(text)
      findings, impression = found.get("findings", ""), found.get("impression", "")
      if not findings and not impression:
        findings = sections.clinical_text(text)
      out.splits[split].append(listing.Study(
          study_id=study, patient_id=subject, images=sorted(present, key=lambda r: r.image_id),
          labels=labels_of.get(study), findings=findings, impression=impression))
    return out


def _read_labels(path: str) -> dict[str, np.ndarray]:
  """study_id -> float32 [14] in clipmed's CheXpert order (the file's columns are alphabetical)."""
  header, rows = listing.read_csv(path)
  listing.require_columns(path, header, ("study_id",) + chexpert.CATEGORIES)
  out = {}
  for line, row in enumerate(rows, start=2):
    try:
      out[row["study_id"].strip()] = np.array(
          [listing.parse_label(row[name]) for name in chexpert.CATEGORIES], np.float32)
    except ValueError as e:
      raise errors.DataError(f"{path}, line {line}: {e}") from None
  return out


class _Reports:
  """The MIMIC-CXR reports: mimic-cxr-reports.zip or a folder holding files/pXX/pSUBJ/sSTUDY.txt.

  Args:
    location: a zip file, or a folder with mimic-cxr-reports.zip or the unzipped files/ tree.
  """

  def __init__(self, location: str):
    zip_path = location if location.endswith(".zip") else os.path.join(location,
                                                                       "mimic-cxr-reports.zip")
    self._zip, self._members, self._root = None, {}, None
    if os.path.isfile(zip_path):
      self._zip = zipfile.ZipFile(zip_path)
      for name in self._zip.namelist():  # any top folder above files/
        if name.endswith(".txt") and "/files/" in "/" + name:
          self._members[name[name.index("files/"):]] = name
      self.where = zip_path
    elif any(itertools.islice(
        glob.iglob(os.path.join(location, "files", "p*", "p*", "s*.txt")), 1)):
      self._root = location
      self.where = os.path.join(location, "files")
    else:
      raise errors.DataError(
          f"mimic_cxr: the reports are missing: expected {zip_path} or "
          f"{os.path.join(location, 'files/pXX/pSUBJECT/sSTUDY.txt')}; download "
          f"mimic-cxr-reports.zip from {REPORTS_HOMEPAGE} and "
          "pass --reports=PATH if it is not in --manual_dir")

  def read(self, subject: str, study: str) -> tuple[str, str]:
    """(report text, "") or ("", reason it cannot be used)."""
    relative = f"files/p{subject[:2]}/p{subject}/s{study}.txt"
    try:
      if self._zip is not None:
        member = self._members.get(relative)
        if member is None:
          return "", "report not found in the reports zip"
        data = self._zip.read(member)
      else:
        with open(os.path.join(self._root, relative), "rb") as f:
          data = f.read()
    except FileNotFoundError:
      return "", "report file not found"
    try:
      return data.decode("utf-8"), ""
    except UnicodeDecodeError:
      return "", "report is not UTF-8 text"
