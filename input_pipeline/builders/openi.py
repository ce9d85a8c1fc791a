"""Open-i: the Indiana University chest X-ray collection, in either of its two common forms.

    python -m input_pipeline.prepare --dataset=openi --manual_dir=/data/openi --data_dir=/data/tfds

The download, untouched; the form is detected from the files in --manual_dir:
  NLM release (openi.nlm.nih.gov: NLMCXR_reports.tgz and NLMCXR_png.tgz, unpacked)
    ecgen-radiology/<n>.xml              one report each: uId CXR<n>, AbstractText by Label
                                         (COMPARISON / INDICATION / FINDINGS / IMPRESSION), one
                                         parentImage per image (some reports have none)
    NLMCXR_png/<parentImage id>.png      CXR<n>_IM-xxxx-yyyy.png or CXR<n>_<k>_IM-xxxx-yyyy.png
                                         (the PNGs may also be unpacked into --manual_dir itself)
  Kaggle re-packaging (kaggle.com/datasets/raddar/chest-xrays-indiana-university)
    indiana_reports.csv                  uid, MeSH, Problems, image, indication, comparison,
                                         findings, impression
    indiana_projections.csv              uid, filename, projection (Frontal / Lateral)
    images/images_normalized/<filename>  <uid>_IM-xxxx-yyyy.dcm.png (PNG files despite the name)
When both forms are present the NLM release is used (and a note says so).

Studies: one per report with images; study_id = patient_id = the report's uid ("CXR12" in the NLM
form, "12" in the Kaggle form): Open-i has no patient ids and one report per patient. image_id =
the parentImage id (NLM, "CXR12_IM-0125-1001") or the projections filename (Kaggle,
"12_IM-0125-1001.dcm.png").
Split: no official one; seeded 70/15/15 by uid (listing.seeded_split with --seed) over every report
uid of the index, with or without images, so a missing image never moves another report.
Report: FINDINGS + IMPRESSION as written ("XXXX" de-identification included; the report processing
reads it). Labels: clipmed's labeler on the report (CheXpert-14); Open-i has no CheXpert labels.
Views: every image is kept with its view (training keeps the frontal ones by default). Kaggle form:
the projection column (Frontal -> FRONTAL, Lateral -> LATERAL). NLM form: the XML has no
projection; when indiana_projections.csv is in --manual_dir too, its projections are used (matched
by report number and IM-xxxx-yyyy). Otherwise the collection's numbering: a report's images
ordered by their image number yyyy (then id), the first FRONTAL and the others LATERAL. That is
right for the usual -1001 frontal / -2001 lateral pair and a guess elsewhere (CXR1's frontal is
-4001, its lateral -3001), so use the Kaggle projections file where views matter.
Rejected (rejects CSV): an image listed but missing on disk ("file not found"), an unreadable
image, every image of a report with neither findings nor impression, a report XML that cannot be
parsed, images of a Kaggle projections uid without a report row.
"""

import os
import re
import xml.etree.ElementTree as ElementTree

import tensorflow_datasets as tfds

from clipmed import errors
from input_pipeline.builders import base
from input_pipeline.builders import listing

HOMEPAGE = "https://openi.nlm.nih.gov/"
KAGGLE_PAGE = "https://www.kaggle.com/datasets/raddar/chest-xrays-indiana-university"
XML_DIR = "ecgen-radiology"
PNG_DIR = "NLMCXR_png"
REPORTS_CSV = "indiana_reports.csv"
PROJECTIONS_CSV = "indiana_projections.csv"
KAGGLE_IMAGE_DIRS = ("images/images_normalized", "images_normalized")
# "CXR12_IM-0125-1001" / "CXR1_1_IM-0001-4001" (NLM) and "12_IM-0125-1001.dcm.png" (Kaggle) ->
# (report number, "IM-xxxx-yyyy"): the key that matches an image across the two forms.
_NLM_IMAGE_RE = re.compile(r"^CXR(\d+)(?:_\d+)?_(IM-\d+-(\d+))$")
_KAGGLE_IMAGE_RE = re.compile(r"^(\d+)_(IM-\d+-\d+)(?:\.dcm)?\.png$", re.IGNORECASE)


class ClipmedOpeni(base.RealDatasetBuilder):
  """Open-i / Indiana University chest X-rays with their reports (module docstring)."""

  VERSION = tfds.core.Version("1.0.0")
  DATASET = "openi"
  HOMEPAGE = HOMEPAGE
  HAS_REPORTS = True

  def list_studies(self, manual_dir: str) -> listing.Listing:
    xml_dir = os.path.join(manual_dir, XML_DIR)
    if os.path.isdir(xml_dir):
      out = self._list_nlm(manual_dir, xml_dir)
      if os.path.exists(os.path.join(manual_dir, REPORTS_CSV)):
        out.notes.append(f"both forms found: read the NLM release ({XML_DIR}/), not {REPORTS_CSV}")
      return out
    if os.path.exists(os.path.join(manual_dir, REPORTS_CSV)):
      return self._list_kaggle(manual_dir)
    found = sorted(os.listdir(manual_dir))[:8]
    raise errors.DataError(
        f"openi: no Open-i download in {manual_dir}: expected {XML_DIR}/<n>.xml with "
        f"{PNG_DIR}/ (the NLM release, {HOMEPAGE}) or {REPORTS_CSV} + {PROJECTIONS_CSV} + "
        f"images/images_normalized/ (the Kaggle copy, {KAGGLE_PAGE}); found {found or 'nothing'}")

  # ----------------------------------------------------------------------------- NLM release

  def _list_nlm(self, manual_dir: str, xml_dir: str) -> listing.Listing:
    names = sorted((n for n in os.listdir(xml_dir) if n.lower().endswith(".xml")), key=_natural)
    if not names:
      raise errors.DataError(f"openi: {xml_dir} holds no .xml report; unpack NLMCXR_reports.tgz "
                             f"from {HOMEPAGE} into {manual_dir}")
    png_dir = _nlm_image_dir(manual_dir)
    views_of = _kaggle_views(manual_dir)
    reports, bad = [], []
    for name in names:
      path = os.path.join(xml_dir, name)
      try:
        reports.append(_read_xml(path))
      except (ElementTree.ParseError, ValueError) as e:
        bad.append((f"CXR{os.path.splitext(name)[0]}", path, str(e)))
    split_of = listing.seeded_split([r[0] for r in reports] + [b[0] for b in bad],
                                    seed=self.builder_config.seed)
    out = listing.Listing(splits={"train": [], "validation": [], "test": []},
                          notes=[f"NLM release: {len(names)} reports in {xml_dir}, images in "
                                 f"{png_dir}"])
    out.rejects += [listing.Reject(split_of[uid], uid, "", path, f"report XML cannot be read: "
                                   f"{problem}") for uid, path, problem in bad]
    if views_of:
      out.notes.append(f"views from {os.path.join(manual_dir, PROJECTIONS_CSV)}")
    without_images = 0
    for uid, image_ids, findings, impression in sorted(reports, key=lambda r: _natural(r[0])):
      if not image_ids:
        without_images += 1
        continue
      views = _nlm_views(image_ids, views_of)
      refs = [listing.ImageRef(image_id, os.path.join(png_dir, f"{image_id}.png"), views[image_id])
              for image_id in sorted(image_ids)]
      self._add_study(out, split_of[uid], uid, refs, findings, impression)
    if without_images:
      out.notes.append(f"reports without images (skipped): {without_images}")
    return out

  # ----------------------------------------------------------------------------- Kaggle copy

  def _list_kaggle(self, manual_dir: str) -> listing.Listing:
    reports_path = os.path.join(manual_dir, REPORTS_CSV)
    projections_path = listing.find_file(manual_dir, [PROJECTIONS_CSV], dataset=self.DATASET,
                                         homepage=KAGGLE_PAGE, what="the projections file")
    image_dir = listing.find_file(manual_dir, KAGGLE_IMAGE_DIRS, dataset=self.DATASET,
                                  homepage=KAGGLE_PAGE, what="the image folder")
    header, rows = listing.read_csv(reports_path)
    listing.require_columns(reports_path, header, ("uid", "findings", "impression"))
    reports = {}
    for row in rows:
      reports.setdefault(row["uid"].strip(), (row["findings"].strip(), row["impression"].strip()))
    header, projections = listing.read_csv(projections_path)
    listing.require_columns(projections_path, header, ("uid", "filename", "projection"))
    images: dict[str, dict[str, str]] = {}
    for row in projections:
      images.setdefault(row["uid"].strip(), {}).setdefault(row["filename"].strip(),
                                                           row["projection"].strip().upper())
    split_of = listing.seeded_split(list(reports) + list(images), seed=self.builder_config.seed)
    out = listing.Listing(splits={"train": [], "validation": [], "test": []},
                          notes=[f"Kaggle copy: {len(reports)} reports in {reports_path}, images "
                                 f"in {image_dir}"])
    for uid in sorted(set(reports) | set(images), key=_natural):
      refs = [listing.ImageRef(name, os.path.join(image_dir, name), view)
              for name, view in sorted(images.get(uid, {}).items())]
      if uid not in reports:
        out.rejects += [listing.Reject(split_of[uid], uid, r.image_id, r.path,
                                       f"uid {uid} has no row in {REPORTS_CSV}") for r in refs]
      elif refs:
        self._add_study(out, split_of[uid], uid, refs, *reports[uid])
    without_images = sum(uid not in images for uid in reports)
    if without_images:
      out.notes.append(f"reports without images (skipped): {without_images}")
    return out

  @staticmethod
  def _add_study(out: listing.Listing, split: str, uid: str, refs: list[listing.ImageRef],
                 findings: str, impression: str) -> None:
    """Appends the study of a report (its images on disk; the missing ones are rejects)."""
    present = [r for r in refs if os.path.isfile(r.path)]
    out.rejects += [listing.Reject(split, uid, r.image_id, r.path, "file not found")
                    for r in refs if r not in present]
    if present:
      out.splits[split].append(listing.Study(study_id=uid, patient_id=uid, images=present,
                                             findings=findings, impression=impression))


def _natural(name: str) -> tuple[int, str]:
  """Sorts "CXR2" before "CXR10" (and "2.xml" before "10.xml"); ties by the name."""
  digits = re.search(r"\d+", name)
  return (int(digits.group()) if digits else -1, name)


def _read_xml(path: str) -> tuple[str, list[str], str, str]:
  """(uid, parentImage ids, findings, impression) of one ecgen-radiology report."""
  root = ElementTree.parse(path).getroot()
  uid_element = root.find("uId")
  uid = (uid_element.get("id", "") if uid_element is not None else "").strip()
  if not uid:
    raise ValueError("no <uId id=...>")
  text = {}
  for element in root.iter("AbstractText"):
    label = element.get("Label", "").strip().upper()
    body = " ".join("".join(element.itertext()).split())
    if body:
      text[label] = f"{text[label]} {body}" if label in text else body
  image_ids = [image.get("id", "").strip() for image in root.iter("parentImage")]
  return (uid, sorted(set(i for i in image_ids if i)), text.get("FINDINGS", ""),
          text.get("IMPRESSION", ""))


def _nlm_image_dir(manual_dir: str) -> str:
  """NLMCXR_png/, or manual_dir itself when the PNGs were unpacked there; else DataError."""
  png_dir = os.path.join(manual_dir, PNG_DIR)
  if os.path.isdir(png_dir):
    return png_dir
  with os.scandir(manual_dir) as entries:
    if any(e.name.startswith("CXR") and e.name.endswith(".png") for e in entries):
      return manual_dir
  raise errors.DataError(
      f"openi: the images are missing: expected {png_dir}/CXR<n>_IM-xxxx-yyyy.png (NLMCXR_png.tgz "
      f"unpacked) beside {XML_DIR}/; found {sorted(os.listdir(manual_dir))[:8]} in {manual_dir}. "
      f"Download it from {HOMEPAGE}")


def _kaggle_views(manual_dir: str) -> dict[tuple[str, str], str]:
  """(report number, "IM-xxxx-yyyy") -> view, from an indiana_projections.csv in manual_dir."""
  path = os.path.join(manual_dir, PROJECTIONS_CSV)
  if not os.path.isfile(path):
    return {}
  header, rows = listing.read_csv(path)
  listing.require_columns(path, header, ("filename", "projection"))
  out = {}
  for row in rows:
    match = _KAGGLE_IMAGE_RE.match(row["filename"].strip())
    if match:
      out.setdefault(match.groups(), row["projection"].strip().upper())
  return out


def _nlm_views(image_ids: list[str], views_of: dict[tuple[str, str], str]) -> dict[str, str]:
  """image id -> view of one report's images (module docstring, "Views")."""
  keys = {i: _NLM_IMAGE_RE.match(i) for i in image_ids}
  if views_of and all(m and m.group(1, 2) in views_of for m in keys.values()):
    return {i: views_of[m.group(1, 2)] for i, m in keys.items()}
  order = sorted(image_ids, key=lambda i: (int(keys[i].group(3)) if keys[i] else 10**9, i))
  return {i: "FRONTAL" if rank == 0 else "LATERAL" for rank, i in enumerate(order)}
