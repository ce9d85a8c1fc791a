"""CXR-Align tasks A and B on a hand-computed case."""

import ml_collections
import numpy as np
import pytest

from clipmed.evaluators import cxr_align
from clipmed.evaluators.base import EvalContext, SplitData

TEXTS = {"r0": [1, 0], "n0": [0, 1], "o0": [0.9, 0.1], "r1": [1, 0], "n1": [0, 1]}
CONFIG = ml_collections.ConfigDict(dict(task="cxr_align", split="test", every_steps=0,
                                        num_bootstrap=100))


def _embed(texts):
  return np.array([TEXTS[t] for t in texts], np.float32)


def _split(extras):
  image = np.array([[1, 0], [0, 1], [1, 0]], np.float32)
  return SplitData(dataset="toy", split="test", image=image, report=image,
                   labels=np.full((3, 14), np.nan, np.float32), reports=["a", "b", "c"],
                   study_ids=["s0", "s1", "s2"], extras=extras)


def test_tasks_hand_computed():
  extras = {"cxr_align_report": ["r0", "r1", None],
            "cxr_align_negated": ["n0", "n1", None],
            "cxr_align_omitted": ["o0", None, None]}
  ctx = EvalContext.from_splits({"test": _split(extras)}, embed_texts=_embed)
  out = cxr_align.CxrAlign(CONFIG).evaluate(ctx)
  # Task A: study 0 prefers r0 (1 > 0); study 1 prefers n1 (1 > 0): 1/2. Study 2 has no triplet.
  assert out["task_a"].value == pytest.approx(0.5)
  # Task B: only study 0; sim(r0) = 1 > sim(o0) = 0.9 / |(0.9, 0.1)| ~ 0.994.
  assert out["task_b"].value == pytest.approx(1.0)
  assert out["chance"].value == 0.5
  assert out["task_a"].ci_low <= 0.5 <= out["task_a"].ci_high


def test_partial_extras_and_missing_references_are_reported():
  ctx = EvalContext.from_splits({"test": _split({"cxr_align_negated": [None] * 3})},
                                embed_texts=_embed)
  with pytest.raises(ValueError, match="give all three CXR-Align keys or none"):
    cxr_align.CxrAlign(CONFIG).evaluate(ctx)
  extras = {"cxr_align_report": [None, None, None],
            "cxr_align_negated": ["n0", None, None],
            "cxr_align_omitted": [None, None, None]}
  ctx = EvalContext.from_splits({"test": _split(extras)}, embed_texts=_embed)
  with pytest.raises(ValueError, match="study s0"):
    cxr_align.CxrAlign(CONFIG).evaluate(ctx)


def test_triplets_built_from_reports_when_extras_are_absent():
  reports = ["FINDINGS: The lungs are clear. No pleural effusion or pneumothorax.\n\n"
             "IMPRESSION: No acute cardiopulmonary process.",
             "FINDINGS: Moderate cardiomegaly. Small right pleural effusion. No pneumothorax."
             "\n\nIMPRESSION: Cardiomegaly and small right pleural effusion."]
  extras = cxr_align.triplet_extras(reports, seed=0)
  assert set(extras) == {"cxr_align_report", "cxr_align_negated", "cxr_align_omitted"}
  assert all(v[0] is None for v in extras.values())  # a normal report has no triplet
  ref, neg, omit = (extras[k][1] for k in ("cxr_align_report", "cxr_align_negated",
                                           "cxr_align_omitted"))
  assert ref and neg and omit and len({ref, neg, omit}) == 3

  rng = np.random.default_rng(0)
  image = rng.normal(size=(2, 4)).astype(np.float32)
  data = SplitData(dataset="toy", split="test", image=image, report=image,
                   labels=np.full((2, 14), np.nan, np.float32), reports=reports,
                   study_ids=["s0", "s1"], extras={})
  embedded = []

  def embed(texts):
    embedded.extend(texts)
    return np.random.default_rng(len(embedded)).normal(size=(len(texts), 4))

  evaluator = cxr_align.CxrAlign(CONFIG)
  out = evaluator.evaluate(EvalContext.from_splits({"test": data}, embed_texts=embed))
  assert out["task_a"].value in (0.0, 1.0) and out["task_b"].value in (0.0, 1.0)
  assert set(embedded) == {ref, neg, omit}
  # Built once per split: a second checkpoint reuses the triplets.
  assert evaluator._built[("toy", "test")] is evaluator._triplets(data, seed=0)
