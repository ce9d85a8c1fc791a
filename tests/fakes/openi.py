"""A small fake copy of Open-i (Indiana University chest X-rays), in either of its two forms.

    form="nlm":    ecgen-radiology/<n>.xml + NLMCXR_png/CXR<n>[_<k>]_IM-xxxx-yyyy.png
                   (projections=True adds the Kaggle indiana_projections.csv beside them)
    form="kaggle": indiana_reports.csv + indiana_projections.csv
                   + images/images_normalized/<n>_IM-xxxx-yyyy.dcm.png

Both forms hold the same reports (REPORTS). Faults planted on purpose: a report without images
(CXR4), a report with empty findings and impression (CXR5, its image rejected), a truncated PNG,
a listed image missing on disk, a report XML cut in half (NLM form, 13.xml) and a projections row
whose uid has no report (Kaggle form, uid 99).
"""

import csv
import os
from xml.sax import saxutils

from tests.fakes import images as fake_images

# (n, [(image tail "IM-xxxx-yyyy", Kaggle projection)], NLM file prefix, findings, impression).
# The images are listed in the XML in this order; CXR1 lists its frontal -4001 before -3001.
REPORTS = [
    (1, [("IM-0001-4001", "Frontal"), ("IM-0001-3001", "Lateral")], "CXR1_1",
     "The cardiac silhouette and mediastinum size are within normal limits. There is no pulmonary "
     "edema. There is no focal consolidation. There are no XXXX of a pleural effusion.",
     "Normal chest x-XXXX."),
    (2, [("IM-0652-1001", "Frontal"), ("IM-0652-2001", "Lateral")], "CXR2",
     "Moderate cardiomegaly. Large right pleural effusion.", "Cardiomegaly and effusion."),
    (3, [("IM-1384-2001", "Lateral"), ("IM-1384-1001", "Frontal"), ("IM-1384-3001", "Lateral")],
     "CXR3", "Right lower lobe consolidation.", "Pneumonia."),
    (4, [], "CXR4", "No pneumothorax.", "Normal."),  # a report without images
    (5, [("IM-2050-1001", "Frontal")], "CXR5", "", ""),  # empty report
    (6, [("IM-2051-1001", "Frontal"), ("IM-2051-2001", "Lateral")], "CXR6",
     "Mild pulmonary edema.", "Edema."),
    (7, [("IM-2052-1001", "Frontal")], "CXR7", "Left pneumothorax.", "Pneumothorax."),
    (8, [("IM-2053-1001", "Frontal")], "CXR8", "Heart size is normal. Lungs are clear.",
     "No acute disease."),
    (9, [("IM-2054-1001", "Frontal")], "CXR9", "Left basilar atelectasis.", "Atelectasis."),
    (10, [("IM-2055-1001", "Frontal")], "CXR10", "Right PICC line in place.", "Line in place."),
    (11, [("IM-2056-1001", "Frontal")], "CXR11", "Cardiomegaly.", "Enlarged heart."),
    (12, [("IM-2057-1001", "Frontal")], "CXR12", "Small left effusion.", "Effusion."),
]
TRUNCATED = (6, "IM-2051-2001")
MISSING = (7, "IM-2052-1001")
EMPTY_REPORT = 5
NO_IMAGES = 4
BAD_XML = 13                    # NLM form: 13.xml is cut in half
ORPHAN = ("99", "IM-9999-1001")  # Kaggle form: a projections row without a report

_XML = """<?xml version="1.0" encoding="utf-8"?>
<eCitation>
   <meta type="rr"/>
   <uId id="CXR{n}"/>
   <pmcId id="{n}"/>
   <docSource>CXR</docSource>
   <IUXRId id="{n}"/>
   <licenseType>open-access</licenseType>
   <publisher>Indiana University</publisher>
   <MedlineCitation Owner="Indiana University" Status="supplied by publisher">
      <Article PubModel="Electronic">
         <ArticleTitle>Indiana University Chest X-ray Collection</ArticleTitle>
         <Abstract>
            <AbstractText Label="COMPARISON">None.</AbstractText>
            <AbstractText Label="INDICATION">XXXX-year-old male, chest pain.</AbstractText>
            <AbstractText Label="FINDINGS">{findings}</AbstractText>
            <AbstractText Label="IMPRESSION">{impression}</AbstractText>
         </Abstract>
      </Article>
   </MedlineCitation>
   <MeSH>
      <major>normal</major>
   </MeSH>
{images}</eCitation>
"""
_IMAGE = """   <parentImage id="{id}">
      <figureId>F1</figureId>
      <caption>Xray Chest PA and Lateral</caption>
      <panel type="single">
         <url>/hadoop/storage/radiology/extract/{id}.jpg</url>
         <imgModality>7</imgModality>
      </panel>
   </parentImage>
"""


def nlm_id(n: int, tail: str) -> str:
  """The NLM image id (parentImage id, PNG stem) of report n's image `tail`."""
  prefix = next(r[2] for r in REPORTS if r[0] == n)
  return f"{prefix}_{tail}"


def kaggle_name(n, tail: str) -> str:
  """The Kaggle file name of report n's image `tail`."""
  return f"{n}_{tail}.dcm.png"


def _write_image(path: str, n: int, k: int, tail: str, size: tuple[int, int]) -> None:
  if (n, tail) == MISSING:
    return
  pixels = fake_images.chest_like(*size, seed=10 * n + k)
  fake_images.write_png(path, pixels)
  if (n, tail) == TRUNCATED:
    fake_images.write_truncated(path, path)


def write(root: str, *, form: str = "nlm", projections: bool = False,
          size: tuple[int, int] = (96, 80)) -> str:
  """Writes the fake download into `root` (form "nlm" or "kaggle"). Returns root."""
  os.makedirs(root, exist_ok=True)
  if form == "nlm":
    xml_dir = os.path.join(root, "ecgen-radiology")
    os.makedirs(xml_dir, exist_ok=True)
    for n, images, _, findings, impression in REPORTS:
      parts = "".join(_IMAGE.format(id=nlm_id(n, tail)) for tail, _ in images)
      with open(os.path.join(xml_dir, f"{n}.xml"), "w", encoding="utf-8") as f:
        f.write(_XML.format(n=n, findings=saxutils.escape(findings),
                            impression=saxutils.escape(impression), images=parts))
      for k, (tail, _) in enumerate(images):
        _write_image(os.path.join(root, "NLMCXR_png", f"{nlm_id(n, tail)}.png"), n, k, tail, size)
    text = _XML.format(n=BAD_XML, findings="Clear.", impression="Normal.", images="")
    with open(os.path.join(xml_dir, f"{BAD_XML}.xml"), "w", encoding="utf-8") as f:
      f.write(text[: len(text) // 2])
    if projections:
      _write_projections(root)
  elif form == "kaggle":
    with open(os.path.join(root, "indiana_reports.csv"), "w", newline="", encoding="utf-8") as f:
      writer = csv.writer(f)
      writer.writerow(["uid", "MeSH", "Problems", "image", "indication", "comparison",
                       "findings", "impression"])
      for n, _, _, findings, impression in REPORTS:
        writer.writerow([n, "normal", "normal", "Chest, 2 views, frontal and lateral",
                         "XXXX-year-old male, chest pain.", "None.", findings, impression])
    _write_projections(root)
    folder = os.path.join(root, "images", "images_normalized")
    for n, images, *_ in REPORTS:
      for k, (tail, _) in enumerate(images):
        _write_image(os.path.join(folder, kaggle_name(n, tail)), n, k, tail, size)
    fake_images.write_png(os.path.join(folder, kaggle_name(*ORPHAN)),
                          fake_images.chest_like(*size, seed=99))
  else:
    raise ValueError(f"form must be 'nlm' or 'kaggle', got {form!r}")
  return root


def _write_projections(root: str) -> None:
  with open(os.path.join(root, "indiana_projections.csv"), "w", newline="",
            encoding="utf-8") as f:
    writer = csv.writer(f)
    writer.writerow(["uid", "filename", "projection"])
    for n, images, *_ in REPORTS:
      for tail, projection in images:
        writer.writerow([n, kaggle_name(n, tail), projection])
    writer.writerow([ORPHAN[0], kaggle_name(*ORPHAN), "Frontal"])
