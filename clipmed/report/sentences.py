"""Sentence splitting for radiology reports.

Robust to list numbering ("1. ..."), abbreviations ("Dr.", "approx.", "e.g."), decimals and
measurements ("3.5 cm."), de-identification tokens ("XXXX"), missing spaces after a period and the
hard line wraps of MIMIC-CXR reports. Splitting compound statements into one finding per sentence
lives in :mod:`clipmed.report.compound`.
"""

import re

# Words whose trailing period does not end a sentence (lower case, without the period).
_ABBREVIATIONS = frozenset({
    "dr", "mr", "mrs", "ms", "prof", "st", "vs", "approx", "appr", "cf", "e.g", "i.e", "eg", "ie",
    "fig", "no", "nos", "incl", "resp", "esp", "pt", "pts", "hx", "sx", "yr", "yrs", "min", "max",
    "a.m", "p.m", "u.s", "ant", "post", "lat", "sup", "inf", "ap", "pa",
})
_UNITS = frozenset({"cm", "mm", "m", "cc", "ml", "in", "ft", "kg", "lbs", "hrs", "hr"})
# Abbreviations that may still end a sentence when a capitalised word follows.
_SOFT_ABBREVIATIONS = frozenset({"no", "ant", "post", "lat", "sup", "inf", "ap", "pa", "min",
                                 "max", "pt", "pts", "yr", "yrs", "st"})

_LIST_MARKER_RE = re.compile(r"(?:^|(?<=[\n.!?:;\x00]))\s*(?:\(?\d{1,2}[.)]|[-*\u2022])\s+(?=\S)")
_BLANK_LINE_RE = re.compile(r"\n\s*\n")
_LINE_ITEM_RE = re.compile(r"\n\s*(?=(?:\d{1,2}[.)]|[-*\u2022])\s)")
_SPACES_RE = re.compile(r"\s+")
_BOUNDARY_RE = re.compile(r"([.!?]+)(\s+|(?=[A-Z][a-z]))")
_WORD_BEFORE_RE = re.compile(r"([A-Za-z.]+)$")
_SPLIT_MARK = "\x00"
_FIRST_ITEM_RE = re.compile(r"(?:^|[\s:])1[.)]\s+[A-Z]")
_LATER_ITEM_RE = re.compile(r"(?<=[a-z])\s+(?:[2-9]|1\d)[.)]\s+(?=[A-Z])")


def _protect_list_markers(text: str) -> str:
  """Replaces list numbering at sentence starts with a hard boundary."""
  return _LIST_MARKER_RE.sub(_SPLIT_MARK, text)


def _is_boundary(text: str, dot_start: int, dots: str, gap: str, next_char: str) -> bool:
  """Decides whether the punctuation at text[dot_start] ends a sentence."""
  if dots != "." and not dots.startswith("."):
    return True  # "!" or "?"
  before = _WORD_BEFORE_RE.search(text, 0, dot_start)
  word = before.group(1).lower().rstrip(".") if before else ""
  if not gap:  # "lungs.There": only between two real words
    return len(word) >= 2 and "." not in word
  if word in _ABBREVIATIONS:
    return word in _SOFT_ABBREVIATIONS and next_char.isupper()
  if next_char.islower() and (word in _UNITS or len(word) == 1):
    return False  # "3.5 cm. mass", an initial
  return True


def split_sentences(text: str) -> list[str]:
  """Splits report text into sentences.

  Args:
    text: report text (one section or a whole report).

  Returns:
    Sentences, stripped, without list numbering, in order. Empty pieces are dropped.
  """
  if not text:
    return []
  text = text.replace("\r\n", "\n").replace("\r", "\n")
  text = _BLANK_LINE_RE.sub(_SPLIT_MARK, text)
  text = _LINE_ITEM_RE.sub(_SPLIT_MARK, text)
  text = _protect_list_markers(text)
  if _SPLIT_MARK in text or _FIRST_ITEM_RE.search(text):
    # Numbered impressions ("1. ... 2. ...") sometimes lack the period before the next number.
    text = _LATER_ITEM_RE.sub(_SPLIT_MARK, text)
  text = text.replace("\n", " ")
  text = re.sub(r"\.(?:\s*\.)+", ".", text)  # "abnormality.." and ". ." -> "."
  pieces: list[str] = []
  for block in text.split(_SPLIT_MARK):
    block = _SPACES_RE.sub(" ", block).strip()
    if not block:
      continue
    start = 0
    for m in _BOUNDARY_RE.finditer(block):
      end = m.end(1)
      next_char = block[m.end():m.end() + 1]
      if not next_char:
        continue
      if not _is_boundary(block, m.start(1), m.group(1), m.group(2), next_char):
        continue
      pieces.append(block[start:end])
      start = m.end()
    pieces.append(block[start:])
  out = []
  for piece in pieces:
    piece = piece.strip(" ,;")
    if re.search(r"[A-Za-z]", piece):
      out.append(piece)
  return out


def normalize_sentence(sentence: str) -> str:
  """Capitalises the first letter and ends the sentence with a single period."""
  sentence = _SPACES_RE.sub(" ", sentence).strip(" ,;:")
  if not sentence:
    return ""
  sentence = sentence[0].upper() + sentence[1:]
  if sentence[-1] not in ".!?":
    sentence += "."
  return sentence


def join_sentences(sentences: list[str]) -> str:
  """Joins sentences into report text, one space apart."""
  return " ".join(s for s in (normalize_sentence(x) for x in sentences) if s)
