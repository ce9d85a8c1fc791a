"""Negation and uncertainty of a mention: cues, their scopes, and the decision.

A mention's status is read from three places of its sentence (lower-cased):
  * the clause before it ("no", "without", "possible", "may represent", ...), up to the nearest
    clause break ("but", "however", "which", "with", ";", "there is", ...). A negation cue does not
    reach a mention when a new predicate starts in between ("opacity without effusion may
    represent pneumonia": "may" starts a new predicate, so pneumonia is uncertain, not negated);
  * the mention itself ("the heart is not enlarged", "heart size is borderline");
  * the words right after it ("... is not seen", "... has resolved", "... cannot be excluded").
Order of decision: uncertain negations ("cannot be excluded", "difficult to exclude", "versus")
-> uncertain; negation -> negative; uncertainty -> uncertain; otherwise positive.

What counts as uncertain follows the CheXpert labeler's patterns: hedges ("may represent",
"possible", "suggestive of", "questionable", "concerning for", "could be present"), "cannot
exclude" / "not excluded", alternatives ("X versus Y", "X or Y"), "correlate clinically for X",
and a hedged cause ("likely due to X"). As in CheXpert, a bare "to exclude X" / "rule out X" is a
negation (the finding is not reported), and "X is likely <adjective>" ("pleural thickening is
likely chronic") hedges the adjective, not X.

Pseudo-negations are removed first: "no change in the effusion" asserts the effusion.
"""

import re

from clipmed.report import chexpert

POSITIVE, NEGATIVE, UNCERTAIN = chexpert.POSITIVE, chexpert.NEGATIVE, chexpert.UNCERTAIN

# Clause breaks: a cue before one of these does not reach a mention after it. "compatible with" /
# "consistent with" link a finding to its interpretation within one clause ("no consolidation
# consistent with pneumonia" negates both).
_CLAUSE_BREAK_RE = re.compile(
    r"[;:]|\.\s|\b(?:but|however|although|though|yet|except|excepting|whereas|while|which|"
    r"(?<!compatible\s)(?<!consistent\s)with|aside\s+from|apart\s+from|other\s+than|besides|"
    r"there\s+(?:is|are|has|have)|and\s+(?:the|there|a|an|mild|moderate|severe|small|large)|"
    r"secondary\s+to|due\s+to|related\s+to|because|as\s+well\s+as|in\s+addition|otherwise|"
    r"thought\s+to|along\s+with)\b")
_PSEUDO_NEG_RE = re.compile(
    r"\bno\s+(?:(?:significant|appreciable|definite|interval|substantial|marked|major|"
    r"acute|other|real|gross|obvious)\s+)*(?:change|changes|increase|decrease|improvement|"
    r"worsening|progression|difference|growth)\b|\bnot\s+(?:significantly\s+|substantially\s+)?"
    r"(?:changed|increased|decreased|improved|worsened)\b|\bwithout\s+(?:(?:significant|"
    r"interval|appreciable|substantial)\s+)*(?:change|increase|decrease|progression)\b|"
    r"\bnot\s+only\b|\bno\s+doubt\b|\bgram[\s-]+negative\b|\bnot\s+well\s+(?:seen|visualized)\b")
_PRE_NEG_RE = re.compile(
    r"\b(?:no|not|without|negative\s+for|free\s+of|clear\s+of|absen(?:ce|t)\s+of|"
    r"resolution\s+of|resolved|removal\s+of|removed|rather\s+than|nor|neither|never|"
    r"lack\s+of|no\s+longer|excluded?|ruled\s+out|rule\s+out|r/o|instead\s+of|"
    r"interval\s+removal)\b")
_PRE_UNC_NEG_RE = re.compile(
    r"\b(?:cannot|can\s*not|can't|could\s+not|not)\s+(?:be\s+)?(?:entirely\s+|completely\s+|"
    r"definitely\s+|totally\s+|confidently\s+)?(?:exclude[ds]?|rule[ds]?\s+out)\b|"
    r"\b(?:difficult|hard|unable)\s+to\s+(?:\w+ly\s+)?(?:exclude|rule\s+out)\b|"
    r"\b(?:to|for)\s+(?:evaluate\s+for|assess\s+for)\b|"
    r"\bevaluat(?:e|ion)\s+(?:for|of)\s+(?:possible\s+)?|\bversus\b|\bvs\b")
_PRE_UNC_RE = re.compile(
    r"\b(?:may|might|could|possibl[ey]|probabl[ey]|likely|unlikely|suspect(?:ed)?|"
    r"suspicious|suspicion|concern(?:ing)?|worrisome|suggest(?:s|ed|ing|ive)?|suggestion|"
    r"question(?:able|ed)?|equivocal|indeterminate|uncertain|differential|consider(?:ed)?|"
    r"presum(?:ed|ably|ptive)|favou?r(?:ed|s)?|borderline|represent(?:s|ing)?|reflect(?:s|ing)?|"
    r"compatible\s+with|could\s+be|apparent|questionably|perhaps|raise[sd]?\s+the\s+possibility|"
    r"not\s+clearly|cannot\s+be\s+(?:entirely\s+)?(?:distinguished|differentiated)|"
    r"correlat(?:e|ion)\s+(?:clinically\s+)?(?:for|as\s+to|regarding)|"
    r"symptoms?\s+(?:\w+\s+){0,2}?of)\b")
# A negation cue does not reach across the start of a new predicate.
_NEG_BLOCKER_RE = re.compile(
    r"\b(?:may|might|could|likely|probabl[ey]|possibl[ey]|represent\w*|reflect\w*|"
    r"favou?r\w*|presum\w*|is|are|was|were|has|have|remains?|persists?|"
    r"appears?|demonstrates?|shows?|seen|noted|present|identified|and\s+(?:a|an|the))\b")
# A hedged cause ("blunting, likely due to pleural thickening", "may be secondary to infection"):
# the clause break "due to" keeps negation out, but the hedge before it reaches the cause.
_HEDGED_CAUSE_RE = re.compile(
    r"\b(?:likely|probabl[ey]|possibl[ey]|perhaps|presumably|maybe|questionably|"
    r"(?:may|might|could)\s+(?:also\s+)?be)\s+(?:\w+ly\s+)?(?:due|secondary|related)\s+to\s*$")
# A participle that describes the finding's history ("resolution of the previously seen nodule")
# is part of the noun phrase, not a new predicate, so it does not block a negation cue.
_HISTORY_PARTICIPLE_RE = re.compile(
    r"\b(?:previously|formerly|earlier|initially|recently)\s+(?:\w+ly\s+)?(?:seen|noted|"
    r"identified|described|demonstrated|present|reported|visualized)\b")
_INTERIOR_NEG_RE = re.compile(r"\b(?:not|no|never)\b")
_INTERIOR_UNC_RE = re.compile(r"\b(?:may|might|could|possibly|probably|borderline|likely|"
                              r"questionabl[ey]|perhaps|equivocal)\b")
_POST_UNC_RE = re.compile(
    r"^[\s,]*(?:[a-z/-]+\s+){0,4}?(?:is|are|was|were)?\s*(?:cannot|can\s*not|can't|could\s+not|"
    r"may\s+not|not)\s+(?:be\s+)?(?:entirely\s+|completely\s+|definitely\s+|totally\s+|"
    r"confidently\s+)?(?:excluded|ruled\s+out|exclude)\b|"
    r"^[\s,]*(?:[a-z/-]+\s+){0,4}?(?:is|are|was|were)?\s*(?:difficult|hard)\s+to\s+(?:\w+ly\s+)?"
    r"(?:exclude|rule\s+out)\b|"
    r"^[\s,]*(?:[a-z/-]+\s+){0,2}?(?:is|are|was|were)\s+(?:\w+ly\s+)?(?:possible|suspected|"
    r"questioned|questionable|suggested|favou?red|considered|not\s+excluded|"
    r"a\s+possibility|a\s+consideration|uncertain|equivocal|not\s+certain|"
    r"(?:likely|probable)(?=\s*$|\s*[,;.)]|\s+(?:present|there|given|but|and|although|though|"
    r"in\s+the\s+(?:appropriate|right)\s+clinical)\b))\b|"
    r"^[\s,]*(?:[a-z/-]+\s+){0,3}?(?:may|might|could|can)\s+(?:also\s+|still\s+)?(?:be\s+)?"
    r"(?:present|seen|developing|there)\b|"
    r"^\s*\?|^[\s,]*(?:versus|vs)\b|^[\s,]*(?:is|are)?\s*(?:suspected|questioned)\b")
_POST_NEG_RE = re.compile(
    r"^[\s,]*(?:[a-z/-]+\s+){0,4}?(?:is|are|was|were|has\s+been|have\s+been|has|have)?\s*"
    r"(?:not|no\s+longer|never)\s+(?:be\s+|been\s+)?(?:\w+ly\s+)?(?:seen|identified|visuali[sz]ed|"
    r"demonstrated|present|appreciated|evident|noted|visible|detected|apparent|shown|found|"
    r"observed|re-?demonstrated|definite)\b|"
    r"^[\s,]*(?:[a-z/-]+\s+){0,4}?(?:has|have)?\s*(?:since\s+)?(?:resolved|cleared|"
    r"disappeared)\b|"
    r"^[\s,]*(?:[a-z/-]+\s+){0,4}?(?:is|are|was|were|has\s+been|have\s+been)\s+(?:\w+ly\s+)?"
    r"(?:absent|excluded|ruled\s+out|removed|resolved|withdrawn|gone)\b|"
    r"^\s*(?::|-)\s*(?:none|negative|absent|no)\b|"
    r"^[\s,]*(?:[a-z/-]+\s+){0,3}?(?:is|are|appears?|remains?)\s+(?:\w+ly\s+)?(?:normal|"
    r"within\s+(?:the\s+)?(?:normal\s+)?limits|unremarkable)\b")


def has_uncertainty_cue(text: str) -> bool:
  """True when lower-cased `text` holds a hedging cue ("may", "possible", "versus", ...)."""
  return bool(_PRE_UNC_RE.search(text) or _PRE_UNC_NEG_RE.search(text))


def _clause_start(sentence: str, start: int) -> int:
  """Offset where the clause holding the character at `start` begins."""
  clause_start = 0
  for m in _CLAUSE_BREAK_RE.finditer(sentence, 0, start):
    clause_start = m.end()
  return clause_start


def _clause_end(sentence: str, end: int) -> int:
  m = _CLAUSE_BREAK_RE.search(sentence, end)
  return m.start() if m else len(sentence)


def _mask_pseudo(text: str) -> str:
  """Blanks pseudo-negations ("no change in") so they are not read as negation cues."""
  if "no" not in text and "not" not in text and "without" not in text and "gram" not in text:
    return text
  return _PSEUDO_NEG_RE.sub(lambda m: " " * len(m.group(0)), text)


def _negated_before(pre: str) -> bool:
  """True when a negation cue in `pre` reaches its end (no new predicate in between)."""
  last = None
  for last in _PRE_NEG_RE.finditer(pre):
    pass
  if last is None:
    return False
  rest = _HISTORY_PARTICIPLE_RE.sub(" ", pre[last.end():])
  return _NEG_BLOCKER_RE.search(rest) is None


def mention_status(sentence: str, start: int, end: int) -> float:
  """Status of the mention sentence[start:end] from the cues around it.

  Args:
    sentence: the lower-cased sentence.
    start: mention start offset.
    end: mention end offset.

  Returns:
    POSITIVE (1.0), NEGATIVE (0.0) or UNCERTAIN (-1.0).
  """
  clause_start = _clause_start(sentence, start)
  pre = _mask_pseudo(sentence[clause_start:start])
  interior = sentence[start:end]
  post = sentence[end:_clause_end(sentence, end)]
  if _PRE_UNC_NEG_RE.search(pre) or _POST_UNC_RE.search(post):
    return UNCERTAIN
  if (_negated_before(pre) or _INTERIOR_NEG_RE.search(_mask_pseudo(interior))
      or _POST_NEG_RE.search(post)):
    return NEGATIVE
  if (_PRE_UNC_RE.search(pre) or _INTERIOR_UNC_RE.search(interior)
      or (clause_start and _HEDGED_CAUSE_RE.search(sentence, max(0, clause_start - 40),
                                                   clause_start))):
    return UNCERTAIN
  return POSITIVE
