"""Splits compound statements into one finding per sentence.

"No pneumothorax, effusion, or consolidation." -> "No pneumothorax." "No effusion."
"No consolidation."; "Lungs are clear without focal consolidation." -> "Lungs are clear."
"No focal consolidation."; "Cardiomegaly and mild pulmonary edema." -> "Cardiomegaly." "Mild
pulmonary edema.". Alternatives ("atelectasis or pneumonia") and hedged statements stay whole.
Every split is checked with the labeler: when the pieces do not carry exactly the labels of the
original statement, the statement is kept as it was.
"""

import math
import re

from clipmed.report import chexpert
from clipmed.report import labeler
from clipmed.report import negation

_I = re.IGNORECASE
# Clause boundaries that open a new statement; group 1 is what replaces the boundary word.
_CLAUSE_SPLIT_RE = re.compile(
    r"\s*;\s*|,?\s+(?:but|however|although|though|whereas)\s*,?\s+|"
    r"(?:" + "|".join(f"(?<={w})" for w in ("seen", "identified", "noted", "present",
                                             "demonstrated", "evident", "visualized"))
    + r"),\s+|"
    r"\s*,\s*(?=(?:no|without|there\s+(?:is|are))\b)|"
    r"\s+and\s+(?=(?:the|there|no)\s)|\s+(?=without\s)|\s+with\s+(?=no\s)", _I)
_NEGATED_LIST_RE = re.compile(
    r"^(?P<pre>(?:.*?\s)?(?:no|without|negative\s+for|free\s+of|clear\s+of)\s+"
    r"(?:(?:evidence|signs?|findings)\s+(?:of|for)\s+)?(?:(?:an?|any)\s+)?)"
    r"(?P<items>.+?)(?P<post>\s+(?:is|are|was|were)\s+(?:\w+ly\s+)?(?:seen|identified|noted|"
    r"present|demonstrated|visuali[sz]ed|evident|appreciated|detected)|\s+(?:seen|identified|"
    r"noted|demonstrated|detected))?\s*[.]?\s*$", _I)
_ITEM_SEP_RE = re.compile(r"\s*,\s*(?:(?:or|and|nor)\s+)?|\s+(?:or|and|nor|and/or)\s+", _I)
_POSITIVE_SEP_RE = re.compile(
    r"\s*,\s*(?:and\s+|with\s+)?(?:(?:associated|adjacent)\s+(?=\w))?|"
    r"\s+(?:and|with|as\s+well\s+as)\s+(?:(?:associated|adjacent)\s+(?=\w))?", _I)
# "<finding>, which may represent <diagnosis>": the hedged interpretation becomes its own
# statement ("Possible <diagnosis>."), so that the finding can be removed without it.
_HEDGE_RE = re.compile(
    r"^(?P<finding>.+?)(?:\s*,\s*|\s+)(?:(?:which|that)\s+)?(?:(?:is|are)\s+)?(?:xxxx\s+)?"
    r"(?:(?:most|more)\s+)?(?:(?:likely|probably|possibly)\s+)?(?:to\s+)?"
    r"(?P<cue>(?:may|might|could)\s+(?:represent|reflect|be\s+(?:due\s+to|secondary\s+to|"
    r"compatible\s+with|related\s+to)|be|indicate)|suggestive\s+of|suggesting|suggests?|"
    r"concerning\s+for|suspicious\s+for|worrisome\s+for|compatible\s+with|representing|"
    r"represents?|reflects?|reflecting|likely|features\s+suggest|favou?ring)\s+"
    r"(?:(?:a|an|the)\s+)?(?P<dx>.+?)\s*$", _I)
# "<finding>, atelectasis versus infiltrate": the alternatives become their own statement.
_ALTERNATIVES_TAIL_RE = re.compile(
    r"^(?P<finding>.+?),\s+(?P<dx>[^,]+?\s(?:versus|vs\.?|or|and/or)\s[^,]+?)\s*$", _I)
_COPULA_END_RE = re.compile(r"\b(?:is|are|was|were|appears?|remains?)\s*$", _I)
_LEAD_WORD_RE = re.compile(
    r"^\s*(?:\w+ly|also|otherwise|additionally|overall|moreover|again)\s*,?\s*$", _I)
_THERE_IS_RE = re.compile(r"^\s*there\s+(?:is|are)\s+(?:an?\s+)?", _I)
_WITHOUT_RE = re.compile(r"^\s*(?:without|with\s+no)\s+", _I)


def _same_labels(a, b) -> bool:
  """Label vectors equal on every category but No Finding (NaN equals NaN)."""
  for i in range(chexpert.NUM_CATEGORIES):
    if i == chexpert.NO_FINDING:
      continue
    x, y = float(a[i]), float(b[i])
    if not (x == y or (math.isnan(x) and math.isnan(y))):
      return False
  return True


def _as_statement(clause: str) -> str:
  """A clause cut out of a sentence, as a stand-alone statement."""
  clause = clause.strip(" ,;:.")
  clause = _WITHOUT_RE.sub("No ", clause)
  return clause[:1].upper() + clause[1:] if clause else clause


def _split_clauses(sentence: str) -> list[str]:
  pieces, pos = [], 0
  for m in _CLAUSE_SPLIT_RE.finditer(sentence):
    before = sentence[pos:m.start()]
    # "X are without Y": "without" completes the predicate; no split there.
    if m.group(0).strip() == "" and _COPULA_END_RE.search(before):
      continue
    pieces.append(before)
    pos = m.end()
  pieces.append(sentence[pos:])
  pieces = [p for p in pieces if p.strip(" ,;:.")]
  # A piece too short to stand alone ("Specifically,") joins its neighbour.
  out: list[str] = []
  carry = ""
  for piece in pieces:
    if _LEAD_WORD_RE.match(piece):
      if out and not carry:
        out[-1] = out[-1] + ", " + piece.strip(" ,")
      else:
        carry = (carry + " " + piece.strip(" ,")).strip() + ","
      continue
    out.append((carry + " " + piece).strip() if carry else piece)
    carry = ""
  if carry:
    out.append(carry.rstrip(","))
  return [_as_statement(p) for p in out]


def _split_negated_list(clause: str) -> list[str]:
  m = _NEGATED_LIST_RE.match(clause)
  if not m:
    return [clause]
  items = [i for i in _ITEM_SEP_RE.split(m.group("items")) if i.strip()]
  if len(items) < 2 or any(len(i.split()) > 6 for i in items):
    return [clause]
  pre, post = m.group("pre"), m.group("post") or ""
  pre = pre[:1].upper() + pre[1:]
  # The first statement keeps the sentence's own wording; the others read "No <item>".
  return [f"{pre}{items[0].strip()}{post}"] + [f"No {item.strip()}{post}" for item in items[1:]]


def _split_positive_list(clause: str) -> list[str]:
  """Splits "A and B" when A and B name findings of different categories, without hedging."""
  found = labeler.sentence_mentions(clause)
  cats = {m.category for m in found}
  if len(cats) < 2 or any(m.status != chexpert.POSITIVE for m in found):
    return [clause]
  lowered = clause.lower()
  if negation.has_uncertainty_cue(lowered) or re.search(r"\b(?:or|versus|vs)\b|/", lowered):
    return [clause]
  cuts = []
  for a, b in zip(found, found[1:]):
    if a.category == b.category or b.start < a.end:
      continue
    between = clause[a.end:b.start]
    sep = _POSITIVE_SEP_RE.search(between)
    if sep:
      cuts.append((a.end + sep.start(), a.end + sep.end()))
  if not cuts:
    return [clause]
  pieces, start = [], 0
  for cut_start, cut_end in cuts:
    pieces.append(clause[start:cut_start])
    start = cut_end
  pieces.append(clause[start:])
  there = _THERE_IS_RE.match(clause)
  out = [pieces[0]]
  for (cut_start, cut_end), piece in zip(cuts, pieces[1:]):
    piece = piece.strip()
    with_sep = "with" in clause[cut_start:cut_end].lower()
    out.append(("There is " + piece) if there and not with_sep else piece[:1].upper() + piece[1:])
  return out


def _split_hedge(clause: str) -> list[str]:
  """Splits a finding from the hedged diagnosis offered for it."""
  for pattern in (_HEDGE_RE, _ALTERNATIVES_TAIL_RE):
    m = pattern.match(clause)
    if m and labeler.sentence_mentions(m.group("finding")) and labeler.sentence_mentions(
        m.group("dx")):
      dx = re.sub(r"^(?:(?:a|an|the|some)\s+)", "", m.group("dx").strip(), flags=_I)
      finding = re.sub(r"[,\s]+(?:this|which|that|these|it|and)\s*$", "", m.group("finding"),
                       flags=_I)
      if not re.match(r"(?:possibl[ey]|probabl[ey]|likely|questionable)\b", dx, _I):
        dx = "Possible " + dx
      return [finding, dx[:1].upper() + dx[1:]]
  return [clause]


def split_compound(sentence: str) -> list[str]:
  """Splits one sentence into statements of one finding each.

  Args:
    sentence: one sentence.

  Returns:
    One or more statements (without final periods added). The original sentence when no safe
    split exists.
  """
  original = labeler.label_sentences([sentence])
  pieces: list[str] = []
  for clause in _split_clauses(sentence):
    for part in _split_negated_list(clause):
      for hedged in _split_hedge(part):
        pieces.extend(_split_positive_list(hedged))
  pieces = [p.strip(" ,;:.") for p in pieces if p.strip(" ,;:.")]
  if len(pieces) <= 1:
    return [sentence.strip()]
  if not _same_labels(labeler.label_sentences(pieces), original):
    return [sentence.strip()]
  return pieces
