"""Hard-negative reports (METHOD.md, "Hard negatives"; paper Sec. 4.1).

Abnormal report (a category other than No Finding / Support Devices positive): one positive entity
is picked at random (seeded); r^r removes every sentence that mentions it; r^n inserts a natural
negative statement about it (data/negative_statements.json) at the beginning, middle or end. Both
work on the cleaned report (one finding per sentence), so removing a sentence removes one finding.
Each candidate is checked with the labeler: the chosen entity must be negative in r^n and not
mentioned in r^r, every other category (No Finding aside) unchanged. Entities that cannot be
removed cleanly are skipped; the pick is random among the clean ones.

Normal report: the hard negative is a report of the training set with exactly one positive entity
(:func:`pool_negatives`).
"""

from collections.abc import Callable, Mapping, Sequence
import dataclasses
import json
import math
import os
import re
import types

import numpy as np

from clipmed.report import chexpert
from clipmed.report import clean
from clipmed.report import graph as graph_lib
from clipmed.report import labeler
from clipmed.report import sentences as sentences_lib

POSITIONS = ("beginning", "middle", "end")
STATEMENTS_PATH = os.path.join(os.path.dirname(__file__), "data", "negative_statements.json")
# Categories never picked as the entity: No Finding is derived, devices are not findings.
EXCLUDED_ENTITIES = (chexpert.NO_FINDING, chexpert.SUPPORT_DEVICES)


@dataclasses.dataclass(frozen=True)
class HardNegative:
  """A hard negative of one report.

  Attributes:
    entity: CheXpert category name of the changed entity.
    report: the cleaned original report r.
    negated: r^n, the entity replaced by a negative statement.
    omitted: r^r, the sentences mentioning the entity removed.
    position: where the negative statement went ("beginning", "middle" or "end").
    labels: [14] labels of `report`.
    negated_labels: [14] labels of `negated`.
    omitted_labels: [14] labels of `omitted`.
  """
  entity: str
  report: str
  negated: str
  omitted: str
  position: str
  labels: np.ndarray
  negated_labels: np.ndarray
  omitted_labels: np.ndarray


def load_statements(path: str) -> dict[str, tuple[str, ...]]:
  """Reads negative statements: a JSON object, CheXpert category -> list of sentences."""
  try:
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise ValueError(f"cannot read negative statements from {path}: {e}") from e
  out = {}
  for name, phrases in data.items():
    if name.startswith("_"):
      continue
    chexpert.names_to_indices([name])
    if not isinstance(phrases, list) or not phrases or not all(isinstance(p, str) for p in phrases):
      raise ValueError(f"{path}: {name!r} must map to a non-empty list of sentences")
    out[name] = tuple(phrases)
  return out


# The shipped statements, read once (read-only).
DEFAULT_STATEMENTS = types.MappingProxyType(load_statements(STATEMENTS_PATH))


def is_abnormal(labels: np.ndarray) -> bool:
  """Some category other than No Finding / Support Devices is positive."""
  return bool(_candidates(labels))


def _candidates(labels: np.ndarray) -> list[int]:
  return [i for i in range(chexpert.NUM_CATEGORIES)
          if i not in EXCLUDED_ENTITIES and labels[i] == chexpert.POSITIVE]


def _unchanged_except(a: np.ndarray, b: np.ndarray, entity: int) -> bool:
  for i in range(chexpert.NUM_CATEGORIES):
    if i in (entity, chexpert.NO_FINDING):
      continue
    x, y = float(a[i]), float(b[i])
    if not (x == y or (math.isnan(x) and math.isnan(y))):
      return False
  return True


def _remove_entity(sentences: list[str], mentioned: list[set[int]], labels: np.ndarray,
                   entity: int, statements: Mapping[str, Sequence[str]],
                   rng: np.random.Generator, *, trim: bool = False) -> list[str]:
  """Removes the sentences that mention `entity`.

  A removed sentence may also be the only place that rules out another finding ("no focal
  opacity to suggest pneumonia"); that negative finding is restated on its own in its place with
  one of its negative statements, so that only `entity` changes. With `trim`, a sentence that
  also mentions another category loses only the entity's words (:func:`_trim_mentions`) and is
  kept when something is left of it.
  """
  kept: list[str] = []
  negative_elsewhere = set()
  for s, cats in zip(sentences, mentioned):
    if entity not in cats:
      negative_elsewhere |= cats
  restated: set[int] = set()
  for s, cats in zip(sentences, mentioned):
    if entity not in cats:
      kept.append(s)
      continue
    if trim and cats - {entity}:
      trimmed = _trim_mentions(s, entity)
      if trimmed:
        kept.append(trimmed)
        continue
    for other in sorted(cats - {entity, chexpert.NO_FINDING} - negative_elsewhere - restated):
      name = chexpert.CATEGORIES[other]
      if labels[other] == chexpert.NEGATIVE and name in statements:
        phrases = statements[name]
        kept.append(phrases[int(rng.integers(len(phrases)))])
        restated.add(other)
  return kept


# Words a finding's name carries on its left ("small left pleural effusion": the report graph's
# anatomy and modifier words, articles, sizes) go with it, and so does one connector that ties it
# to the rest of the sentence ("X or Y", "X with Y", "Y and X").
_LEFT_WORDS = graph_lib.DESCRIPTIVE_WORDS | frozenset(
    "a an the xxxx sized size new persistent adjacent associated early mm cm".split())
_SIZE_RE = re.compile(r"\d+(?:\.\d+)?(?:mm|cm)?")
_RIGHT_LINK_RE = re.compile(r"^\s*(?:,\s*)?(?:and/or|or|versus|vs\.?|and|/|with)\s+")
_LEFT_LINK_RE = re.compile(r"\s*(?:,\s*)?(?:and/or|or|versus|vs\.?|and|/|with)\s*$|\s*,\s*$")
_LEADING_LINK_RE = re.compile(r"^\W*(?:(?:and|or|with|versus|vs|as\s+well\s+as)\b\W*)*")
_TRAILING_LINK_RE = re.compile(
    r"(?:\W*\b(?:and|or|with|versus|vs|of|in|at|to|by|is|are|was|were|which|that|possible|"
    r"possibly|probable|likely)\b)+\W*$")


def _modifiers_start(text: str, start: int) -> int:
  """Where the run of _LEFT_WORDS (and "x to y" ranges of them) ending at `start` begins."""
  tokens = list(re.finditer(r"\S+", text[:start]))
  left = start
  for k in range(len(tokens) - 1, -1, -1):
    word = tokens[k].group(0).lower()
    if word.endswith((",", ";", ":")):
      break
    ranged = (word == "to" and k > 0 and left < start
              and tokens[k - 1].group(0).lower() in _LEFT_WORDS)
    if word in _LEFT_WORDS or _SIZE_RE.fullmatch(word) or ranged:
      left = tokens[k].start()
    else:
      break
  return left


def _trim_mentions(sentence: str, entity: int) -> str:
  """`sentence` without the words that name `entity`, or "" when nothing sensible is left.

  Each mention of the entity goes with its modifiers on the left and one connector ("or",
  "and", "with", ",") so that "Small effusions with adjacent atelectasis." becomes "Adjacent
  atelectasis." and "Possible scarring or atelectasis." becomes "Possible atelectasis.". The
  caller checks the result with the labeler.
  """
  spans = [(m.start, m.end) for m in labeler.sentence_mentions(sentence) if m.category == entity]
  text = sentence
  for start, end in sorted(spans, reverse=True):
    left = _modifiers_start(text, start)
    right = _RIGHT_LINK_RE.match(text[end:])
    if right:
      end += right.end()
    else:
      link = _LEFT_LINK_RE.search(text[:left])
      if link:
        left = link.start()
    text = text[:left] + " " + text[end:]
  text = _TRAILING_LINK_RE.sub("", _LEADING_LINK_RE.sub("", text)).strip()
  text = re.sub(r"\s+([,.;:])", r"\1", re.sub(r"\s+", " ", text)).strip(" ,;")
  if len(re.findall(r"[a-z]{3,}", text.lower())) < 2 or not labeler.sentence_mentions(text):
    return ""
  return sentences_lib.normalize_sentence(text)


def _insert(sentences: list[str], statement: str, position: str) -> list[str]:
  index = {"beginning": 0, "middle": len(sentences) // 2, "end": len(sentences)}[position]
  return sentences[:index] + [statement] + sentences[index:]


def make_hard_negative(report: str | Sequence[str], rng: np.random.Generator, *,
                       statements: Mapping[str, Sequence[str]] | None = None,
                       cleaned: bool = False) -> HardNegative | None:
  """Builds (r, r^n, r^r) for an abnormal report.

  Args:
    report: report text, or its cleaned sentences when `cleaned` is True.
    rng: numpy Generator (entity, statement and position are drawn from it).
    statements: category name -> negative sentences; defaults to data/negative_statements.json.
    cleaned: `report` is already a list of cleaned sentences.

  Returns:
    A HardNegative, or None when the report is normal or no entity can be changed cleanly.
  """
  statements = DEFAULT_STATEMENTS if statements is None else statements
  sentences = list(report) if cleaned else clean.clean_sentences(report)
  mentioned = [{m.category for m in labeler.sentence_mentions(s)} for s in sentences]
  labels = labeler.label_sentences(sentences)
  candidates = [c for c in _candidates(labels) if chexpert.CATEGORIES[c] in statements]
  for entity in rng.permutation(candidates).tolist():
    for trim in (False, True):
      kept = _remove_entity(sentences, mentioned, labels, entity, statements, rng, trim=trim)
      omitted_labels = labeler.label_sentences(kept)
      # r^r must stay a report: never empty (a report about the entity alone has none).
      if (kept and math.isnan(omitted_labels[entity])
          and _unchanged_except(labels, omitted_labels, entity)):
        break
    else:
      continue
    phrases = list(statements[chexpert.CATEGORIES[entity]])
    position = POSITIONS[int(rng.integers(len(POSITIONS)))]
    for k in rng.permutation(len(phrases)).tolist():
      negated = _insert(kept, phrases[k], position)
      negated_labels = labeler.label_sentences(negated)
      if (negated_labels[entity] == chexpert.NEGATIVE
          and _unchanged_except(labels, negated_labels, entity)):
        return HardNegative(
            entity=chexpert.CATEGORIES[entity], report=" ".join(sentences),
            negated=" ".join(negated), omitted=" ".join(kept), position=position,
            labels=labels, negated_labels=negated_labels, omitted_labels=omitted_labels)
  return None


def single_entity_mask(labels: np.ndarray) -> np.ndarray:
  """Rows with exactly one positive entity (No Finding / Support Devices aside), none uncertain.

  Args:
    labels: [N, 14] labeler-convention labels.

  Returns:
    bool [N].
  """
  labels = np.asarray(labels, dtype=np.float32)
  findings = np.delete(labels, list(EXCLUDED_ENTITIES), axis=-1)
  positives = np.sum(findings == chexpert.POSITIVE, axis=-1)
  uncertain = np.sum(findings == chexpert.UNCERTAIN, axis=-1)
  return (positives == 1) & (uncertain == 0)


def pool_negatives(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Picks, for every normal report, a hard negative from the pool of single-entity reports.

  Args:
    labels: [N, 14] labels of the training reports.
    rng: numpy Generator.

  Returns:
    int64 [N]: index of the chosen report for normal rows (no positive or uncertain entity), -1
    for the other rows and when the pool is empty.
  """
  labels = np.asarray(labels, dtype=np.float32)
  findings = np.delete(labels, list(EXCLUDED_ENTITIES), axis=-1)
  normal = ~np.any((findings == chexpert.POSITIVE) | (findings == chexpert.UNCERTAIN), axis=-1)
  pool = np.flatnonzero(single_entity_mask(labels))
  out = np.full((labels.shape[0],), -1, dtype=np.int64)
  if pool.size:
    rows = np.flatnonzero(normal)
    out[rows] = pool[rng.integers(pool.size, size=rows.size)]
  return out


TRIPLET_COLUMNS = ("chosen_entity", "report", "negated", "omitted")


def cxr_align_triplets(texts: Sequence[str], *, seed: int = 0,
                   progress: Callable[[int], None] | None = None) -> list[dict[str, str]]:
  """CXR-Align triplets of abnormal reports.

  Each report draws from its own generator, np.random.default_rng([seed, row]), so a report's
  triplet does not depend on the other rows.

  Args:
    texts: N report texts.
    seed: random seed.
    progress: optional callback(done).

  Returns:
    Dicts with source_row (1-based) and TRIPLET_COLUMNS, in input order.
  """
  out = []
  for i, text in enumerate(texts):
    if text and text.strip():
      hn = make_hard_negative(text, np.random.default_rng([seed, i]))
      if hn is not None:
        out.append({"source_row": i + 1, "chosen_entity": hn.entity, "report": hn.report,
                    "negated": hn.negated, "omitted": hn.omitted})
    if progress is not None:
      progress(i + 1)
  return out
