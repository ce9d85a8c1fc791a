"""Cleaned reports: one finding per sentence, no references to prior studies.

The rule-based stand-in for the paper's LLM rewriting (METHOD.md, "CXR-Align"): FINDINGS +
IMPRESSION -> sentences -> temporal clean-up -> compound statements split -> administrative
sentences (notifications, recommendations, technique) and exact repeats dropped.
"""

import re

from clipmed.report import compound
from clipmed.report import sections
from clipmed.report import sentences as sentences_lib
from clipmed.report import temporal

_I = re.IGNORECASE
# Sentences that report no finding: notifications, recommendations, technique, body-part titles.
_ADMIN_RE = re.compile(
    r"\b(?:notified|discussed\s+with|communicated|telephone|paged|called\s+to|read\s+back|"
    r"recommend\w*|follow[\s-]?up|correlat\w+|please\s+note|were\s+obtained|was\s+obtained|"
    r"examination\s+consists|views?\s+of\s+the\s+chest|views\s+were|images?\s+(?:were|was)|"
    r"critical\s+result|veriphy|further\s+evaluation|if\s+clinically|clinical\s+correlation)\b"
    r"|^\s*(?:\d+\s+images?|(?:pa|ap)(?:\s+and\s+lateral)?(?:\s+views?)?|chest|hand|sternum|"
    r"abdomen|soft\s+tissue\s+neck|(?:thoracic|lumbar|lumbosacral|cervical)\s+spine|"
    r"(?:left|right)\s+(?:knee|hand|shoulder|hip|wrist|elbow|ankle|foot)|(?:frontal|lateral)"
    r"(?:\s+and\s+lateral)?\s+(?:views?|radiographs?)?)\s*\d*\.?\s*$", _I)


def clean_sentences(text: str, *, sections_only: bool = True) -> list[str]:
  """The cleaned report as sentences (each ends with a period).

  Args:
    text: free-text report.
    sections_only: read FINDINGS + IMPRESSION when the report has headers.

  Returns:
    Sentences with one finding each and no temporal references, in report order.
  """
  if sections_only:
    text = sections.clinical_text(text)
  out: list[str] = []
  seen: set[str] = set()
  for sentence in sentences_lib.split_sentences(text):
    if _ADMIN_RE.search(sentence):
      continue
    cleaned = temporal.remove_temporal(sentence)
    if cleaned is None:
      continue
    for piece in compound.split_compound(cleaned):
      piece = sentences_lib.normalize_sentence(piece)
      key = piece.lower()
      if piece and key not in seen:
        seen.add(key)
        out.append(piece)
  return out


def clean_report(text: str) -> str:
  """The cleaned report as text: one finding per sentence, no references to prior studies."""
  return " ".join(clean_sentences(text))
