"""CheXpert Plus: the CheXpert radiographs with their radiology reports (Stanford AIMI).

    python -m input_pipeline.prepare --dataset=chexpert_plus --manual_dir=/data/chexpert_plus \\
        --data_dir=/data/tfds [--labels=labeler] [--seed=0] [--workers=16]

The download, untouched (aimi.stanford.edu/datasets/chexpert-plus), in --manual_dir:
  df_chexpert_plus_240401.csv      one row per image: path_to_image, frontal_lateral, ap_pa,
                                   report, section_findings, section_impression, split, ...
  PNG/train/patient42142/study5/view1_frontal.png ...   the PNG release (8- or 16-bit), or
  train/patient42142/study5/view1_frontal.jpg ...       the JPEG images at path_to_image (also
                                   accepted below a CheXpert-v1.0/ folder: CheXpert's own JPEGs)
  chexbert_labels/report_fixed.json (or chexbert_labels.zip)   optional, the CheXbert labels
Each image is looked for in PNG/ first (path_to_image with .png), then at path_to_image, then
below CheXpert-v1.0/; the printed notes say how many came from each.

Splits: CheXpert Plus has train and valid only. The official `valid` rows become split "test"
(retrieval and CXR-Align evaluate on "test"); a seeded 5% of the train PATIENTS (at least one;
listing.seeded_split with --seed) becomes "validation"; the rest is "train".
Report: FINDINGS = section_findings, IMPRESSION = section_impression; when both are empty, the
FINDINGS / IMPRESSION of the `report` text, else its clinical text (clipmed.report.sections).
Labels (--labels=dataset, the default), the first source present:
  1. chexbert_labels/report_fixed.json (CheXbert on the whole report; JSON lines keyed by
     path_to_image, null = not mentioned);
  2. CheXpert's own labels, when CheXpert-v1.0(-small)'s train.csv / valid.csv are in
     --manual_dir (or in CheXpert-v1.0/ or CheXpert-v1.0-small/ below it), joined on the
     patientN/studyN/viewN_... part of the path;
  3. clipmed's labeler on the report (also with --labels=labeler, and for a study the source
     does not list). The printed notes say which.
Stored in clipmed.report.chexpert.CATEGORIES order, 1 / 0 / -1 / NaN.
Views: frontal_lateral + ap_pa -> PA / AP (FRONTAL when a frontal image has no AP/PA), LATERAL /
LL / RL (chexpert.view_of); every view is stored, training keeps the frontal ones by default.
study_id "patient42142/study5", patient_id "patient42142", image_id = path_to_image.
Rejected: a listed image found in none of the places above ("file not found"), a path_to_image
that is not <split>/patientN/studyN/<file>, a study whose findings, impression and report are
all empty, and (by the shared code) unreadable images. Rows whose split is neither train nor valid
are left out (counted in `filtered`).
"""

import collections
import glob
import io
import json
import os
import zipfile

import numpy as np
import tensorflow_datasets as tfds

from clipmed import errors
from clipmed.report import chexpert as chexpert_labels
from clipmed.report import sections
from input_pipeline.builders import base
from input_pipeline.builders import chexpert
from input_pipeline.builders import listing

HOMEPAGE = "https://aimi.stanford.edu/datasets/chexpert-plus"
INDEX = "df_chexpert_plus_240401.csv"
COLUMNS = ("path_to_image", "frontal_lateral", "ap_pa", "report", "section_findings",
           "section_impression", "split")
SPLITS = {"train": "train", "valid": "test", "validate": "test", "validation": "test"}
VALIDATION_FRACTION = 0.05  # of the train patients
CHEXBERT_FILES = ("chexbert_labels/report_fixed.json", "report_fixed.json")
CHEXBERT_ZIP = "chexbert_labels.zip"
PNG_FOLDER = "PNG"


class ClipmedChexpertPlus(base.RealDatasetBuilder):
  """CheXpert Plus images with their reports and CheXbert labels (module docstring)."""

  VERSION = tfds.core.Version("1.0.0")
  DATASET = "chexpert_plus"
  HOMEPAGE = HOMEPAGE
  CLASS_NAMES = chexpert_labels.CATEGORIES
  HAS_REPORTS = True
  OPTIONS = {"labels": ("dataset", ("dataset", "labeler"))}

  def list_studies(self, manual_dir: str) -> listing.Listing:
    index = self._find_index(manual_dir)
    header, rows = listing.read_csv(index)
    listing.require_columns(index, header, COLUMNS)
    roots = self._image_roots(manual_dir)
    out = listing.Listing(splits={"train": [], "validation": [], "test": []})
    labels_of = self._labels(manual_dir, out.notes)

    # (split, study_id, findings, impression, label bytes or b"") -> the images; one study
    # normally, split further only if its rows disagree on the report or the labels.
    groups: dict[tuple[str, str, str, str, bytes], list[listing.ImageRef]] = (
        collections.defaultdict(list))
    missing, used = set(), collections.Counter()
    for row in rows:
      split = SPLITS.get(row["split"].strip().lower())
      image_id = row["path_to_image"].strip().replace("\\", "/")
      if split is None:
        reason = f"split {row['split'].strip()!r} is not train or valid"
        out.filtered[reason] = out.filtered.get(reason, 0) + 1
        continue
      key = chexpert.image_key(image_id)
      if not key:
        out.rejects.append(listing.Reject(split, "", image_id, image_id,
                                          "path_to_image is not <split>/patientN/studyN/<file>"))
        continue
      path, where = _locate(image_id, roots)
      used[where] += 1
      if not where:
        missing.add(path)
      labels = labels_of.get(key)
      groups[(split, key.rsplit("/", 1)[0], *_report(row),
              b"" if labels is None else labels.tobytes())].append(listing.ImageRef(
                  image_id=image_id, path=path,
                  view=chexpert.view_of(row["frontal_lateral"], row["ap_pa"], image_id)))

    validation = _validation_patients(
        sorted({study_id.split("/")[0] for split, study_id, *_ in groups if split == "train"}),
        self.builder_config.seed)
    unlabelled, seen = 0, set()
    for (split, study_id, findings, impression, label_bytes), refs in sorted(
        groups.items(), key=lambda item: (item[0][1], item[0][0]) + item[0][2:]):
      patient = study_id.split("/")[0]
      if split == "train" and patient in validation:
        split = "validation"
      present = []
      for ref in sorted(refs, key=lambda r: r.image_id):
        if (split, ref.image_id) in seen:
          out.filtered["listed twice in the index"] = out.filtered.get(
              "listed twice in the index", 0) + 1
        elif ref.path in missing:
          out.rejects.append(listing.Reject(split, study_id, ref.image_id, ref.path,
                                            "file not found"))
        else:
          present.append(ref)
        seen.add((split, ref.image_id))
      if not present:
        continue
      labels = np.frombuffer(label_bytes, np.float32).copy() if label_bytes else None
      unlabelled += labels is None and bool(labels_of)
      out.splits[split].append(listing.Study(
          study_id=study_id, patient_id=patient, images=present, labels=labels,
          findings=findings, impression=impression))
    if unlabelled:
      out.notes.append(f"{unlabelled} studies are not in the label source: clipmed's labeler "
                       "labels them")
    out.notes.append("images: " + ", ".join(f"{n} from {where}" for where, n in used.items()
                                            if where)
                     + (f", {used['']} not found" if used[""] else ""))
    return out

  def _find_index(self, manual_dir: str) -> str:
    """df_chexpert_plus_240401.csv (or a later df_chexpert_plus_*.csv[.gz]) in manual_dir."""
    others = sorted(glob.glob(os.path.join(glob.escape(manual_dir), "df_chexpert_plus_*.csv*")))
    if not os.path.isfile(os.path.join(manual_dir, INDEX)) and others:
      return others[-1]
    return self.find(manual_dir, INDEX, "the index file")

  def _image_roots(self, manual_dir: str) -> list[tuple[str, str, str]]:
    """(folder, extension or "" to keep path_to_image's, name for the notes) where images may be,
    most preferred first; DataError when there is none."""
    candidates = [(os.path.join(manual_dir, PNG_FOLDER), ".png", "the PNG release (PNG/)"),
                  (manual_dir, "", "path_to_image"),
                  (os.path.join(manual_dir, chexpert.TOP_FOLDERS[0]), "",
                   f"{chexpert.TOP_FOLDERS[0]}/")]
    roots = [(folder, ext, name) for folder, ext, name in candidates
             if any(os.path.isdir(os.path.join(folder, split)) for split in ("train", "valid"))]
    if not roots:
      found = sorted(os.listdir(manual_dir))[:8]
      raise errors.DataError(
          f"{self.DATASET}: the images are missing: expected "
          f"{os.path.join(manual_dir, PNG_FOLDER, 'train')}/patientN/studyN/viewN_*.png (the PNG "
          f"release) or {os.path.join(manual_dir, 'train')}/... (the JPEGs at path_to_image); "
          f"found {found or 'nothing'} in {manual_dir}. Download them from {HOMEPAGE}")
    return roots

  def _labels(self, manual_dir: str, notes: list[str]) -> dict[str, np.ndarray]:
    """image_key -> float32 [14] from the first label source present ({} = clipmed's labeler)."""
    if self.options["labels"] == "labeler":
      notes.append("labels: clipmed's labeler (--labels=labeler)")
      return {}
    for name in CHEXBERT_FILES:
      path = os.path.join(manual_dir, name)
      if os.path.isfile(path):
        with open(path, "rb") as f:
          labels = read_chexbert(f, path)
        notes.append(f"labels: CheXbert, {path}")
        return labels
    zip_path = os.path.join(manual_dir, CHEXBERT_ZIP)
    if os.path.isfile(zip_path):
      with zipfile.ZipFile(zip_path) as z:
        members = sorted(n for n in z.namelist() if os.path.basename(n) == "report_fixed.json")
        if members:
          with z.open(members[0]) as f:
            labels = read_chexbert(f, f"{zip_path}:{members[0]}")
          notes.append(f"labels: CheXbert, {zip_path}:{members[0]}")
          return labels
    index_dir = chexpert.find_index_dir(manual_dir)
    if index_dir:
      labels, paths = {}, []
      for name, _ in chexpert.INDEX_FILES:
        path = os.path.join(index_dir, name)
        if os.path.isfile(path):
          labels.update((chexpert.image_key(row.path), row.labels)
                        for row in chexpert.read_index(path) if row.relative)
          paths.append(path)
      notes.append(f"labels: CheXpert's, {' and '.join(paths)}")
      return labels
    notes.append("labels: clipmed's labeler (no chexbert_labels/report_fixed.json nor CheXpert "
                 "train.csv in --manual_dir)")
    return {}


def read_chexbert(f, where: str) -> dict[str, np.ndarray]:
  """CheXbert labels: JSON lines {"path_to_image": ..., "<class>": 1.0 | 0.0 | -1.0 | null, ...}
  (a JSON array of such objects is accepted too) -> image_key -> float32 [14].

  Raises:
    DataError: naming the line that is not such an object.
  """
  text = io.TextIOWrapper(f, encoding="utf-8-sig")
  first = text.read(1)
  while first.isspace():
    first = text.read(1)
  unit = "item" if first == "[" else "line"
  if first == "[":
    try:
      objects = list(enumerate(json.loads(first + text.read()), start=1))
    except json.JSONDecodeError as e:
      raise errors.DataError(f"{where} is not valid JSON ({e})") from None
  else:
    objects = _json_lines(first, text, where)
  out = {}
  for line, obj in objects:
    where_line = f"{where}, {unit} {line}"
    if not isinstance(obj, dict) or "path_to_image" not in obj:
      raise errors.DataError(f"{where_line}: expected an object with path_to_image and "
                             f"the 14 CheXpert classes, got {str(obj)[:80]!r}")
    missing = [name for name in chexpert_labels.CATEGORIES if name not in obj]
    if missing:
      raise errors.DataError(f"{where_line}: no {', '.join(missing)}")
    try:
      labels = np.array([listing.parse_label(None if obj[name] is None else str(obj[name]))
                         for name in chexpert_labels.CATEGORIES], np.float32)
    except ValueError as e:
      raise errors.DataError(f"{where_line}: {e}") from None
    out[chexpert.image_key(str(obj["path_to_image"]))] = labels
  return out


def _json_lines(first: str, text, where: str):
  """(line number, object) of a JSON-lines stream whose first character was already read."""
  for line, content in enumerate(text, start=1):
    content = (first + content) if line == 1 else content
    if not content.strip():
      continue
    try:
      yield line, json.loads(content)
    except json.JSONDecodeError as e:
      raise errors.DataError(f"{where}, line {line}: not a JSON object ({e.msg})") from None


def _report(row: dict[str, str]) -> tuple[str, str]:
  """(findings, impression) of an index row (module docstring)."""
  def clean(text):
    return (text or "").replace("\r\n", "\n").replace("\r", "\n").strip()
  findings, impression = clean(row["section_findings"]), clean(row["section_impression"])
  if findings or impression:
    return findings, impression
  text = clean(row["report"])
  found = sections.split_sections(text)
  findings, impression = found.get("findings", ""), found.get("impression", "")
  if not findings and not impression:
    findings = sections.clinical_text(text)
  return findings, impression


def _locate(image_id: str, roots: list[tuple[str, str, str]]) -> tuple[str, str]:
  """(path of the image, name of the root it is in); (the first candidate, "") when missing."""
  parts = image_id.lstrip("/").split("/")
  candidates = []
  for folder, ext, name in roots:
    relative = parts if not ext else parts[:-1] + [os.path.splitext(parts[-1])[0] + ext]
    path = os.path.join(folder, *relative)
    if os.path.exists(path):
      return path, name
    candidates.append(path)
  return candidates[0], ""


def _validation_patients(train_patients: list[str], seed: int) -> set[str]:
  """A seeded VALIDATION_FRACTION (at least one, when there are two or more) of the train
  patients."""
  if len(train_patients) < 2:
    return set()
  fraction = max(VALIDATION_FRACTION, 1.0 / len(train_patients))
  assigned = listing.seeded_split(train_patients, seed=seed,
                                  fractions=(1.0 - fraction, fraction, 0.0))
  return {patient for patient, split in assigned.items() if split == "validation"}
