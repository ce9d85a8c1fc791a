"""Temporal clean-up: removes comparisons with prior studies and keeps the finding.

"Stable mild cardiomegaly." -> "Mild cardiomegaly."; "Compared to the prior study, there is a
small left effusion." -> "There is a small left effusion."; "The left effusion has resolved." ->
"No left effusion."; "No significant change." -> dropped. Works on one sentence at a time
(:func:`remove_temporal`) and returns None when nothing but the comparison was said.
"""

import re

from clipmed.report import mentions

_I = re.IGNORECASE
_PRIOR = (r"(?:the\s+|a\s+|an\s+)?(?:prior|previous|preceding|recent|most\s+recent|last|earlier|"
          r"outside|remote|old|comparison|initial|xxxx)\b(?:\s+(?:outside\s+)?(?:study|studies|"
          r"exams?|examinations?|radiographs?|films?|images?|imaging|ct|chest\s+(?:x-?rays?|"
          r"radiographs?|films?|ct)|x-?rays?|ones?|cxr|views?|xxxx|scans?|outside\s+examination)"
          r"\b)?(?:\s+(?:from|of|dated|on)\s+(?:xxxx|\d[\d/.-]*)(?:[\s,]+xxxx)*)?")
_TEMPORAL_ADJ = (r"(?:stable|unchanged|new|newly\s+(?:placed|inserted|seen|noted|developed)|"
                 r"newly|persistent(?:ly)?|persisting|increas(?:ed|ing)|decreas(?:ed|ing)|"
                 r"improv(?:ed|ing)|worsen(?:ed|ing)|enlarging|progressive|progressing|"
                 r"re-?demonstrated|residual|recurrent|resolving|developing|continued|known|"
                 r"previously\s+(?:seen|noted|described|demonstrated|identified|present|"
                 r"visualized)|again\s+"
                 r"(?:seen|noted|demonstrated))")
_DEGREE = r"(?:slightly|mildly|minimally|markedly|significantly|somewhat|moderately|further|" \
          r"grossly|overall|essentially|relatively|largely|otherwise)"
# Words after which "increased" / "decreased" describe the finding, not a change.
_NOT_TEMPORAL_AFTER = (r"(?:heart|cardiac|size|density|densities|markings|interstitial|lung\s+"
                       r"volumes?|attenuation|lucency|opacity\s+of\s+the\s+bones|ap\s+diameter|"
                       r"kyphosis|bone|vascularity|vascular)")

_CUT = "\x01"  # marks where a predicate was removed

# Ordered (pattern, replacement) rewrites; each runs on the whole sentence.
_REWRITES: tuple[tuple[re.Pattern, str], ...] = tuple(
    (re.compile(p, _I), r) for p, r in (
        # Header-like comparison lines: "Comparison: XXXX, XXXX".
        (r"^\s*comparisons?\s*:?\s*(?:(?:xxxx|none|\d[\d/.-]*|and|,)\s*)+[.,:]?\s*", ""),
        # "Compared to the prior study, ..." / "Since the prior exam, ..."
        (r"^\s*(?:when\s+|as\s+)?(?:compared|comparison|in\s+comparison)\s+(?:to|with)\s+"
         r"[^,;]{0,80}[,;]\s*", ""),
        (r"^\s*(?:when\s+|as\s+)?(?:compared|comparison|in\s+comparison)\s+(?:to|with)\s+"
         + _PRIOR + r"\s*", ""),
        (r"^\s*(?:since|from|relative\s+to|versus|vs\.?)\s+" + _PRIOR + r"[^,;]*?(?:,|;)\s*", ""),
        # "There is no (significant) change in the X" -> "There is X".
        (r"\b(there\s+(?:is|has\s+been)\s+)no\s+(?:(?:significant|interval|appreciable|"
         r"substantial)\s+)*change\s+(?:in|of)\s+(?:the\s+)?(?:appearance\s+of\s+(?:the\s+)?)?",
         r"\1"),
        (r"^\s*no\s+(?:(?:significant|interval|appreciable|substantial)\s+)*change\s+(?:in|of)\s+"
         r"(?:the\s+)?(?:appearance\s+of\s+(?:the\s+)?)?", ""),
        # Resolution and removal -> absence.
        (r"^\s*(?:there\s+(?:is|has\s+been)\s+)?(?:partial|near(?:ly)?[\s-]+complete|incomplete|"
         r"near[\s-]+total|interval\s+partial|slight|some)\s+(?:interval\s+)?(?:resolution|"
         r"improvement|clearing|decrease)\s+(?:of|in)\s+(?:the\s+)?", ""),
        (r"^\s*(?:there\s+(?:is|has\s+been)\s+)?(?:interval\s+|complete\s+|near\s+)?"
         r"(?:resolution|removal|clearing)\s+of\s+(?:the\s+)?", "No "),
        (r"^\s*(?:the\s+)?(.+?)\s+(?:has|have)\s+(?:since\s+|now\s+|completely\s+|nearly\s+)?"
         r"(?:resolved|cleared|disappeared|been\s+removed|been\s+withdrawn)\b.*$", r"No \1"),
        (r"^\s*(?:the\s+)?(.+?)\s+(?:is|are)\s+no\s+longer\s+(?:seen|visualized|visualised|"
         r"present|identified|evident|appreciated|visible)\b.*$", r"No \1"),
        (r"^\s*resolved\s+", "No "),
        # "Interval development / placement / increase of X" -> "X".
        (r"\b(?:interval\s+)?(?:development|placement|insertion|appearance|increase|decrease|"
         r"improvement|worsening|progression|enlargement)\s+(?:in\s+(?:the\s+)?(?:size|extent|"
         r"number)(?:\s+and\s+(?:size|extent|number))?\s+)?(?:of|in)\s+(?:the\s+)?(?=\w)"
         r"(?!heart|cardiac)", ""),
        # Comparison phrases anywhere: "unchanged from prior", "compared to the prior study".
        (r"[,\s]*(?:(?:and|but)\s+)?(?:(?:which|that)\s+)?(?:(?:is|are|was|were|has\s+been|"
         r"have\s+been|appears?|remains?)\s+)?(?:" + _DEGREE + r"\s+)?(?:unchanged|stable|similar|"
         r"not\s+(?:significantly\s+)?changed|(?:increased|decreased|improved|worsened|enlarged|"
         r"grown|progressed)(?:\s+in\s+"
         r"(?:size|extent|number))?|more\s+\w+|less\s+\w+|new)\s*(?:in\s+(?:appearance|size)\s+)?"
         r"(?:from|since|compared\s+(?:to|with)|relative\s+to|when\s+compared\s+(?:to|with)|than|"
         r"to|as\s+compared\s+(?:to|with)|in\s+comparison\s+(?:to|with)|versus|on|with)\s+"
         + _PRIOR, ""),
        (r"[,\s]*(?:(?:as\s+|when\s+)?compared\s+(?:to|with)|in\s+comparison\s+(?:to|with)|"
         r"relative\s+to|since|from|than\s+(?:on|in)|(?:seen|noted|visible|described|present|"
         r"demonstrated)\s+on|similar\s+to|as\s+on)\s+" + _PRIOR, ""),
        (r"[,\s]*\bsince\s+xxxx(?:[\s,]+xxxx)*", ""),
        (r"[,\s]*\b(?:in\s+the\s+(?:interim|interval)|as\s+(?:before|previously(?:\s+\w+)?)|"
         r"over\s+time|over\s+the\s+interval)\b", ""),
        # "(which) has increased in size" and similar change clauses.
        (r"[,\s]*(?:(?:which|that)\s+)?(?:has|have)\s+(?:" + _DEGREE + r"\s+)?(?:increased|"
         r"decreased|improved|worsened|progressed|grown|developed|changed|moved|migrated|"
         r"retracted|advanced)(?:\s+(?:outward|inward|slightly|superiorly|inferiorly))?(?:\s+in\s+"
         r"(?:size|number|extent)(?:\s+and\s+(?:size|number|extent))?)?\b", ""),
        # Predicates: "is stable (and ...)", "remains unchanged", "persists".
        (r"\s*,?\s*(?:(?:which|that)\s+)?(?:is|are|was|were|has\s+been|have\s+been|remains?|"
         r"appears?|looks?|seems?)\s+(?:also\s+)?(?:" + _DEGREE + r"\s+)?(?:stable|unchanged|"
         r"similar|not\s+(?:significantly\s+)?changed|persistent|new|again\s+(?:seen|noted)|"
         r"(?:increased|decreased|improved|worsened)(?=\s*(?:in\s+size)?\s*$))(?:\s+in\s+"
         r"(?:size|appearance|extent|position|configuration))?"
         # a predicate ends here: "there is new opacity" is no predicate
         r"(?!\s+(?!(?:and|but|in|from|since|compared|when|to|with|on|as|than)\b)[a-z])"
         r"\s*(?:(and|but)\s+(?=\w))?",
         " " + _CUT + " "),
        (r"\b(?:stable|unchanged)\s+(?:and|but)\s+", ""),
        (r"\s+and\s+(?:stable|unchanged)\b", ""),
        (r"[,\s]+(?:(?:" + _DEGREE + r"\s+)?(?:stable|unchanged|persistent|not\s+changed|again\s+"
         r"(?:seen|noted)|persists?|remains?|redemonstrated)\s*)+(?=[.]?\s*$)", ""),
        # "is again noted" -> "is noted"; "Redemonstration of X" -> "X".
        (r"\b(?:once\s+)?again\s+(?=(?:seen|noted|demonstrated|identified|visualized|present|"
         r"evident|appreciated|shown)\b)", ""),
        (r"\b(?:there\s+(?:is|are)\s+)?again\s+", ""),
        (r"^\s*re-?demonstration\s+of\s+(?:the\s+)?", ""),
        (r"\b(?:is|are)\s+re-?demonstrated\b", "is seen"),
        (r"\bre-?demonstrat(?:es|ed)\b", "shows"),
        (r"^\s*(?:stable|unchanged|similar)\s+(?:appearance|position(?:ing)?|configuration)\s+"
         r"of\s+(?:the\s+)?", ""),
        (r"\b(?:(?:interval\s+)?(?:increased|decreased|increase|decrease)\s+(?:in\s+)?"
         r"(?:the\s+)?(?:size|extent)\s+of\s+(?:the\s+)?)(?!heart|cardiac)", ""),
        (r"\s+with\s+(?:interval\s+)?(?:increased|decreased|increasing|decreasing)\s+size\b", ""),
        (r"\bremains\s+(?=(?:clear|normal|unremarkable|within|in\s+(?:place|position|good|"
         r"satisfactory|standard)|intact|enlarged|elevated|prominent))", "is "),
        (r"\bremain\s+(?=(?:clear|normal|unremarkable|within|in\s+(?:place|position|good|"
         r"satisfactory|standard)|intact|enlarged|elevated|prominent))", "are "),
        (r"[,\s]+both\s*$", ""),
        # Lung volumes keep their meaning without the comparison.
        (r"\bdecreased\s+(lung\s+volumes?)", r"low \1"),
        # Temporal adjectives before a finding: "stable mild cardiomegaly" -> "mild cardiomegaly".
        (r"\b(?:" + _DEGREE + r"\s+)?" + _TEMPORAL_ADJ + r"(?:\s*(?:,|and|but|or|and/or)\s*"
         r"(?:" + _DEGREE + r"\s+)?" + _TEMPORAL_ADJ + r")*\s+(?!" + _NOT_TEMPORAL_AFTER + r")"
         r"(?=[a-z0-9])", ""),
        (r"\b(?:now|still|currently|again|interval(?:ly)?)\s+(?=\w)", ""),
        (r"\b(?:interval|again)\b", ""),
    ))

_TRAILING_VERB_RE = re.compile(
    r"\s+(?:is|are|was|were|has|have|been|appears?|remains?|seems?|looks?|persists?|noted|"
    r"seen)\s*$", _I)
_TRAILING_JOINER_RE = re.compile(
    r"\s+(?:and|but|or|with|of|in|on|to|from|the|as|which|that|there)\s*$", _I)
_LEADING_JUNK_RE = re.compile(r"^[\s,;:.-]*(?:and|but|which|that|also)?\s*[,;:]?\s*", _I)
_CONTENT_STOPWORDS = frozenset("""
a an the is are was were be been being there this that these those it its of in on at to and or
with from since prior previous study studies exam exams examination examinations radiograph
radiographs film films image images imaging chest appearance appearing change changes changed no
not significant significantly interval stable unchanged similar otherwise overall findings finding
xxxx x-ray x-rays ray comparison compared than as before essentially grossly appears remains remain
again noted seen patient today current currently now still cxr view views frontal lateral pa ap
apparent any other acute new also has have without evident relatively little minimal mild slightly
exam. allowing for differences technique technical positioning position rotation given
""".split())
# Findings outside the CheXpert categories that a subject-only sentence may still name.
_FINDING_WORD_RE = re.compile(
    r"\b(?:granulom\w*|nodul\w*|hernia|scoliosis|kyphosis|deformit\w*|prominen\w*|elevat\w*|"
    r"calcifi\w*|changes|emphysema\w*|hyperinflat\w*|tortu\w*|ectatic|ectasia|atherosclero\w*|"
    r"spondylosis|osteophytes?|bullae|bullous|lucenc\w*|thickening|widening|dilat\w*|"
    r"abnormalit\w*|disease|lesions?|cysts?|masse?s?|volumes?|hypoinflat\w*)\b", _I)
_VERB_RE = re.compile(
    r"\b(?:is|are|was|were|has|have|had|be|been|shows?|demonstrates?|appears?|seen|noted|"
    r"present|identified|projects?|measures?|overlies|overlying|extends?|terminates?|\w+ed)\b",
    _I)
_WORD_RE = re.compile(r"[a-z][a-z'-]*")
_DETERMINER_RE = re.compile(r"^(?:the|a|an)\s+", _I)


def _has_content(text: str) -> bool:
  words = _WORD_RE.findall(text.lower())
  return any(w not in _CONTENT_STOPWORDS for w in words)


def _tidy(text: str) -> str:
  text = re.sub(r"\s+", " ", text)
  text = re.sub(r"\s+([,.;:])", r"\1", text)
  text = re.sub(r"([,;:])(?:\s*[,;:])+", r"\1", text)
  text = _LEADING_JUNK_RE.sub("", text)
  return text.strip(" ,;:-")


def remove_temporal(sentence: str) -> str | None:
  """Removes references to prior studies from one sentence.

  Args:
    sentence: one report sentence.

  Returns:
    The sentence without temporal language, or None when only the comparison remained
    ("No interval change.", "Stable appearance of the chest.", "Unchanged from prior.").
  """
  text = sentence.strip()
  had_period = text.endswith(".")
  text = text.rstrip(". ")
  original = text
  for pattern, replacement in _REWRITES:
    text = pattern.sub(replacement, text)
  changed = text != original
  stripped = text.rstrip(" ,;:.").endswith(_CUT)
  text = _tidy(text.replace(_CUT, " "))
  # A sentence left as "Heart size is" is reduced to its subject, kept only when it names a finding.
  previous = None
  while previous != text:
    previous = text
    text = _TRAILING_JOINER_RE.sub("", text).strip(" ,;:")
    before_verbs = text
    text = _TRAILING_VERB_RE.sub("", text).strip(" ,;:")
    stripped = stripped or before_verbs != text
  if stripped:
    if not _FINDING_WORD_RE.search(text) and not mentions.may_mention_finding(text.lower()):
      return None
    text = _DETERMINER_RE.sub("", text)
  elif changed and not _FINDING_WORD_RE.search(text) and not _VERB_RE.search(text) and not \
      mentions.find_rule_matches(text.lower()):
    return None  # "Stable cardiomediastinal silhouette." -> a bare anatomy name says nothing
  if text.lower().startswith("no ") and len(text) > 3:
    text = "No " + _DETERMINER_RE.sub("", text[3:])
  if not text or not _has_content(text):
    return None
  text = text[0].upper() + text[1:]
  return text + "." if had_period or text[-1] not in ".!?" else text
