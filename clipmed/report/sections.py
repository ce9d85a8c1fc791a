"""Report sections: FINDINGS / IMPRESSION extraction from free-text chest X-ray reports.

Handles MIMIC-CXR style reports (upper-case headers such as ``FINDINGS:`` and ``IMPRESSION:``, a
``FINAL REPORT`` banner, wet reads) and Open-i style fields (``Findings:``, ``Impression:``,
``Comparison:``, ``Indication:``). Text that has no recognised header is treated as findings.
"""

import re

# Header text (lower case, single spaces) -> canonical section name. Clinical sections are the two
# the labeler reads; every other header starts a section that is skipped.
_HEADERS: dict[str, str] = {
    "findings": "findings",
    "finding": "findings",
    "findings and impression": "findings",
    "report": "findings",
    "description": "findings",
    "impression": "impression",
    "impressions": "impression",
    "conclusion": "impression",
    "conclusions": "impression",
    "summary": "impression",
    "opinion": "impression",
    "interpretation": "impression",
    "examination": "examination",
    "exam": "examination",
    "procedure": "examination",
    "indication": "indication",
    "indications": "indication",
    "clinical indication": "indication",
    "reason for exam": "indication",
    "reason for examination": "indication",
    "reason for study": "indication",
    "history": "indication",
    "clinical history": "indication",
    "clinical information": "indication",
    "technique": "technique",
    "comparison": "comparison",
    "comparisons": "comparison",
    "prior": "comparison",
    "notification": "notification",
    "recommendation": "recommendation",
    "recommendations": "recommendation",
    "wet read": "wet_read",
    "addendum": "addendum",
}
CLINICAL_SECTIONS = ("findings", "impression")

_HEADER_RE = re.compile(
    r"(?:^|(?<=[\n.:;]))[ \t]*(" + "|".join(
        sorted((re.escape(h).replace(r"\ ", r"\s+") for h in _HEADERS), key=len, reverse=True))
    + r")[ \t]*:", re.IGNORECASE)
_BANNER_RE = re.compile(r"^\s*(?:final\s+report|preliminary\s+report)\s*$",
                        re.IGNORECASE | re.MULTILINE)


def split_sections(text: str) -> dict[str, str]:
  """Splits a report into sections keyed by canonical name.

  Text before the first header is kept under ``"preamble"``. Repeated sections are joined.

  Args:
    text: a free-text report.

  Returns:
    Ordered dict: canonical section name -> section text (stripped).
  """
  text = _BANNER_RE.sub(" ", text or "")
  sections: dict[str, str] = {}
  matches = list(_HEADER_RE.finditer(text))
  starts = [(0, "preamble")] + [
      (m.end(), _HEADERS[" ".join(m.group(1).lower().split())]) for m in matches]
  ends = [m.start() for m in matches] + [len(text)]
  for (start, name), end in zip(starts, ends):
    body = text[start:end].strip()
    if not body:
      continue
    sections[name] = (sections[name] + "\n" + body) if name in sections else body
  return sections


def clinical_text(text: str) -> str:
  """The part of a report a labeler should read: FINDINGS then IMPRESSION.

  Falls back to text outside non-clinical sections (indication, technique, comparison, ...) when
  the report has neither, and to the whole text when it has no recognised header at all.

  Args:
    text: a free-text report.

  Returns:
    The clinical text, sections separated by a blank line.
  """
  sections = split_sections(text)
  parts = [sections[name] for name in CLINICAL_SECTIONS if name in sections]
  if not parts and "preamble" in sections:
    parts = [sections["preamble"]]
  if not parts and "addendum" in sections:
    parts = [sections["addendum"]]
  return "\n\n".join(parts)


# A sentence that is only the name of a body part ("Chest.", "Left knee.", "2. SOFT TISSUE NECK.")
# heads the part of a combined report that describes that examination.
_EXAM_HEADING_RE = re.compile(
    r"^\W*(?:\d+\s*[.)]\s*)?(?:the\s+)?(?:(?:left|right|bilateral)\s+)?(?P<part>[a-z ]+?)"
    r"(?:\s+(?:exam(?:ination)?|series|views?|radiographs?|films?))?\W*$", re.IGNORECASE)
_CHEST_PARTS = frozenset((
    "chest", "thorax", "ribs", "rib", "sternum", "thoracic spine", "lungs", "pa and lateral chest"))
_OTHER_PARTS = frozenset((
    "knee", "knees", "hip", "hips", "pelvis", "shoulder", "shoulders", "neck", "soft tissue neck",
    "soft tissues neck", "abdomen", "kub", "cervical spine", "lumbar spine", "lumbosacral spine",
    "sacrum", "humerus", "elbow", "forearm", "wrist", "hand", "femur", "tibia", "ankle", "foot",
    "feet", "skull", "sinuses", "facial bones", "clavicle"))


def exam_heading(sentence: str) -> str:
  """"chest" or "other" when a sentence only names the body part of an examination, else "".

  Open-i and clinic reports join several examinations ("Chest. ... Left knee. ..."); the
  labeler reads the chest parts only.
  """
  if len(sentence) > 40:
    return ""
  m = _EXAM_HEADING_RE.match(sentence)
  if m is None:
    return ""
  part = " ".join(m.group("part").lower().split())
  return "chest" if part in _CHEST_PARTS else "other" if part in _OTHER_PARTS else ""


def chest_sentences(sentence_list: list[str]) -> list[str]:
  """The sentences outside the non-chest examinations of a combined report (all when none)."""
  out, reading = [], True
  for sentence in sentence_list:
    heading = exam_heading(sentence)
    if heading:
      reading = heading == "chest"
    elif reading:
      out.append(sentence)
  return out


def join_fields(findings: str, impression: str) -> str:
  """Builds a report from separate findings / impression fields (Open-i, SynthCXR)."""
  parts = []
  if findings and findings.strip():
    parts.append("FINDINGS: " + findings.strip())
  if impression and impression.strip():
    parts.append("IMPRESSION: " + impression.strip())
  return "\n\n".join(parts)
