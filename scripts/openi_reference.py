"""The Open-i reference of measure_report_quality.py: reading the --openi CSV, the fixed develop /
held-out split, and the corrections of codings the CSV maps against its own (CheXpert's)
definitions."""

import csv
import dataclasses
import hashlib
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from clipmed.errors import UserError  # noqa: E402
from clipmed.report import chexpert  # noqa: E402
from clipmed.report import sections  # noqa: E402

HALVES = ("develop", "held-out")


def split_half(uid: str) -> str:
  """"develop" or "held-out": the parity of the SHA-256 of the uid (fixed, about half each)."""
  return HALVES[hashlib.sha256(uid.strip().encode("utf-8")).digest()[-1] % 2]


@dataclasses.dataclass
class OpenIReports:
  """The --openi CSV.

  Attributes:
    uids: the reports' uids.
    texts: FINDINGS + IMPRESSION of each report.
    codes: each report's MeSH codes, ";"-separated ("" without a mesh column).
    positives: float32 [N, 14], 1.0 where the reference codes the category.
    corrected: for each of REFERENCE_CORRECTIONS, the number of reports it changed.
  """
  uids: list[str]
  texts: list[str]
  codes: list[str]
  positives: np.ndarray
  corrected: dict[str, int]


def read_openi(path: str, correct: bool = True) -> OpenIReports:
  """The --openi CSV; its positives with REFERENCE_CORRECTIONS applied to each row when
  `correct`."""
  try:
    with open(path, newline="", encoding="utf-8") as f:
      rows = list(csv.DictReader(f))
  except OSError as e:
    raise UserError(f"cannot read {path}: {e.strerror}") from None
  if not rows:
    raise UserError(f"{path}: no data rows")
  missing = [c for c in ("uid", "findings", "impression") + chexpert.CATEGORIES
             if c not in rows[0]]
  if missing:
    raise UserError(f"{path}: missing columns {missing}")
  texts = [sections.join_fields(r["findings"], r["impression"]) for r in rows]
  codes = [r.get("mesh") or "" for r in rows]
  mesh = np.array([[1.0 if r[c].strip() in ("1", "1.0") else 0.0 for c in chexpert.CATEGORIES]
                   for r in rows], dtype=np.float32)
  corrected = {name: 0 for name in REFERENCE_CORRECTIONS}
  for name, correction in REFERENCE_CORRECTIONS.items() if correct else ():
    for i, report_codes in enumerate(codes):
      row = correction(report_codes, mesh[i])
      corrected[name] += int((row != mesh[i]).any())
      mesh[i] = row
  return OpenIReports([r["uid"] for r in rows], texts, codes, mesh, corrected)


def _parse_codes(mesh_codes: str) -> list[tuple[str, ...]]:
  """A report's ";"-separated MeSH codes -> (heading, qualifier, ...) each, parts stripped."""
  return [tuple(part.strip() for part in code.split("/"))
          for code in mesh_codes.split(";") if code.strip()]


def _with_no_finding_rule(positives: np.ndarray) -> np.ndarray:
  """The corrected row's No Finding by CheXpert's rule (chexpert.apply_no_finding_rule), in the
  reference's 0/1 convention."""
  return np.nan_to_num(chexpert.apply_no_finding_rule(positives), nan=0.0)


# MeSH headings of a calcified lesion: a Nodule coded at the same site as one of these is a
# calcified nodule (a calcified granuloma), which the reference's own definition and CheXpert's
# unmention list ("calcified nodul") keep out of Lung Lesion.
_CALCIFIED_HEADINGS = ("Calcified Granuloma", "Calcinosis")


def calcified_nodule_correction(mesh_codes: str, positives: np.ndarray) -> np.ndarray:
  """The reference row with Lung Lesion removed when its only lesion codes are calcified nodules.

  MeSH codes are "Heading/qualifier/...". Lung Lesion comes from Nodule and Mass codes; a Nodule
  whose qualifiers (site, size, number) equal those of a Calcified Granuloma or Calcinosis code
  in the same report is one calcified nodule coded twice (e.g. "calcified nodule representing a
  granuloma" -> Nodule/lung/lower lobe/left; Calcinosis/lung/lower lobe/left). When every
  Nodule / Mass code of a report is such a nodule, Lung Lesion is not coded after all, and No
  Finding follows CheXpert's rule again (1 when nothing but Support Devices is left).

  Args:
    mesh_codes: the report's MeSH codes, ";"-separated.
    positives: float32 [14], 1.0 where the CSV maps a code to the category.

  Returns:
    float32 [14], a corrected copy.
  """
  codes = _parse_codes(mesh_codes)
  lesions = [c for c in codes if c[0] in ("Nodule", "Mass")]
  calcified_sites = {c[1:] for c in codes if c[0] in _CALCIFIED_HEADINGS}
  out = positives.copy()
  lesion = chexpert.INDEX["Lung Lesion"]
  if out[lesion] != 1.0 or not lesions:
    return out
  if all(c[0] == "Nodule" and c[1:] in calcified_sites for c in lesions):
    out[lesion] = 0.0
    out = _with_no_finding_rule(out)
  return out


def enlarged_cardiac_shadow_correction(mesh_codes: str, positives: np.ndarray) -> np.ndarray:
  """The reference row with Cardiomegaly when MeSH codes an enlarged cardiac shadow.

  The indexers code an enlarged heart as Cardiomegaly or as Cardiac Shadow/enlarged (the
  cardiac silhouette); the CSV maps only the first. CheXpert's Cardiomegaly mentions include
  the cardiac shadow, silhouette and contour, so an enlarged one is Cardiomegaly, and No Finding
  is then 0.

  Args:
    mesh_codes: the report's MeSH codes, ";"-separated.
    positives: float32 [14], 1.0 where the CSV maps a code to the category.

  Returns:
    float32 [14], a corrected copy.
  """
  out = positives.copy()
  if any(code[0] == "Cardiac Shadow" and "enlarged" in code[1:]
         for code in _parse_codes(mesh_codes)):
    out[chexpert.INDEX["Cardiomegaly"]] = 1.0
    out = _with_no_finding_rule(out)
  return out


# What the reference's categories are corrected by (--raw_reference: none), in this order: the
# printed name -> function(mesh codes, positives [14]) -> corrected positives.
REFERENCE_CORRECTIONS = {
    "with an enlarged cardiac shadow count as Cardiomegaly": enlarged_cardiac_shadow_correction,
    "whose only Nodule codes are calcified nodules (coded at the site of a Calcified Granuloma / "
    "Calcinosis code) count without Lung Lesion": calcified_nodule_correction,
}
