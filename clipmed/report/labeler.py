"""Rule-based CheXpert-14 labeler (the default labeler of clipmed; offline, pure Python).

Pipeline per report: FINDINGS + IMPRESSION (:mod:`sections`) -> sentences (:mod:`sentences`) ->
mentions per category (:mod:`mentions`) -> status of each mention from negation and uncertainty
cues (:mod:`negation`) -> aggregation per category, as the CheXpert labeler does: positive beats
uncertain beats negative -> the No Finding rule of METHOD.md (chexpert.apply_no_finding_rule).

Output convention: float32 [14] in CheXpert order; 1.0 positive, 0.0 negative, -1.0 uncertain,
NaN not mentioned.
"""

from collections.abc import Callable, Iterable, Sequence
import dataclasses
import re

import numpy as np

from clipmed.report import chexpert
from clipmed.report import mentions
from clipmed.report import negation
from clipmed.report import sections
from clipmed.report import sentences as sentences_lib

# Priority of statuses when one category is mentioned several times.
_RANK = {chexpert.POSITIVE: 3, chexpert.UNCERTAIN: 2, chexpert.NEGATIVE: 1}
# Support devices are not offered as diagnostic alternatives; every finding category is.
_ALTERNATIVES_APPLY = tuple(i != chexpert.SUPPORT_DEVICES for i in range(chexpert.NUM_CATEGORIES))
# Two findings offered as alternatives ("atelectasis or infiltrate", "scar versus effusion").
_ALTERNATIVE_RE = re.compile(r"^\s*,?\s*(?:or|versus|vs\.?|and/or|/)\s*(?:[a-z-]+\s+){0,3}?$")
_XXXX_RE = re.compile(r"\bx{3,}\b")


@dataclasses.dataclass(frozen=True)
class Mention:
  """One mention of a category in a sentence.

  Attributes:
    category: CheXpert category index.
    start: start offset in the sentence.
    end: end offset in the sentence.
    status: 1.0 positive, 0.0 negative, -1.0 uncertain.
  """
  category: int
  start: int
  end: int
  status: float


def normalize_for_matching(sentence: str) -> str:
  """Lower-cases a sentence for the rules, keeping offsets (same length)."""
  return sentence.lower()


def sentence_mentions(sentence: str, following: str = "") -> list[Mention]:
  """Mentions of CheXpert categories in one sentence, with their status.

  Args:
    sentence: one sentence (any case).
    following: the next sentence when it points back at this one ("These are calcified
      granulomas."; mentions.names_previous), read only by the rules' after-context exclusions.

  Returns:
    Mentions in order of start offset. Offsets index into `sentence`.
  """
  text = normalize_for_matching(sentence)
  found = []
  for rule, start, end in mentions.find_rule_matches(text, normalize_for_matching(following)):
    status = rule.status
    if status is None:
      status = negation.mention_status(text, start, end)
      if (status == chexpert.POSITIVE and rule.hedge_after is not None
          and rule.hedge_after.search(text[end:end + 120])):
        status = chexpert.UNCERTAIN
    found.append(Mention(rule.category, start, end, status))
  # A hedge rule ("normal or mildly enlarged") makes the mentions it contains uncertain.
  hedges = [m for m in found if m.status == chexpert.UNCERTAIN]
  if hedges:
    found = [dataclasses.replace(m, status=chexpert.UNCERTAIN)
             if any(h.category == m.category and h.start <= m.start and m.end <= h.end
                    for h in hedges) else m for m in found]
  # Findings offered as alternatives are uncertain unless negated.
  for a, b in zip(found, found[1:]):
    if b.start >= a.end and _ALTERNATIVE_RE.match(text[a.end:b.start]):
      for i in (found.index(a), found.index(b)):
        if found[i].status == chexpert.POSITIVE and _ALTERNATIVES_APPLY[found[i].category]:
          found[i] = dataclasses.replace(found[i], status=chexpert.UNCERTAIN)
  return found



def aggregate(found: Iterable[Mention]) -> np.ndarray:
  """Per-category aggregation of mentions (positive > uncertain > negative > not mentioned).

  Returns:
    [14] float32 without the No Finding rule applied.
  """
  labels = np.full((chexpert.NUM_CATEGORIES,), np.nan, dtype=np.float32)
  best = [0] * chexpert.NUM_CATEGORIES
  for m in found:
    rank = _RANK[m.status]
    if rank > best[m.category]:
      best[m.category] = rank
      labels[m.category] = m.status
  return labels


def label_sentences(sentence_list: Sequence[str]) -> np.ndarray:
  """Labels a report given as sentences (no section extraction).

  Returns:
    [14] float32, labeler convention, No Finding rule applied; all NaN without any sentence
    (nothing was reported, so not even No Finding).
  """
  if not sentence_list:
    return np.full((chexpert.NUM_CATEGORIES,), np.nan, dtype=np.float32)
  return chexpert.apply_no_finding_rule(
      aggregate(m for _, m in sentences_with_mentions(sentence_list)))


def sentences_with_mentions(sentence_list: Sequence[str]) -> list[tuple[str, Mention]]:
  """(sentence, mention) for every mention label_sentences reads, in report order.

  Combined reports ("Chest. ... Left knee. ..."): only the chest examination's sentences count.
  """
  sentence_list = sections.chest_sentences(list(sentence_list))
  found = []
  for i, sentence in enumerate(sentence_list):
    following = sentence_list[i + 1] if i + 1 < len(sentence_list) else ""
    if following and not mentions.names_previous(normalize_for_matching(following)):
      following = ""
    found.extend((sentence, m) for m in sentence_mentions(sentence, following))
  return found


def label_text(text: str) -> np.ndarray:
  """Labels text as it is (all of it; no section extraction). [14] float32."""
  return label_sentences(sentences_lib.split_sentences(text))


def label_report(text: str) -> np.ndarray:
  """Labels one free-text report (FINDINGS + IMPRESSION when the report has headers).

  Args:
    text: report text. Text without any sentence gives all categories not mentioned.

  Returns:
    [14] float32: 1.0 positive, 0.0 negative, -1.0 uncertain, NaN not mentioned.
  """
  return label_sentences(report_sentences(text))


def report_sentences(text: str) -> list[str]:
  """The sentences label_report reads: FINDINGS + IMPRESSION when the report has headers."""
  return sentences_lib.split_sentences(sections.clinical_text(text))


def label_reports(texts: Sequence[str], *,
                  progress: Callable[[int, int], None] | None = None) -> np.ndarray:
  """Labels many reports.

  Args:
    texts: N report texts.
    progress: optional callback(done, total), called every 1,000 reports and at the end.

  Returns:
    [N, 14] float32.
  """
  out = np.full((len(texts), chexpert.NUM_CATEGORIES), np.nan, dtype=np.float32)
  for i, text in enumerate(texts):
    out[i] = label_report(text)
    if progress is not None and ((i + 1) % 1000 == 0 or i + 1 == len(texts)):
      progress(i + 1, len(texts))
  return out
