"""Image-to-report retrieval on a hand-computed case."""

import ml_collections
import numpy as np
import pytest

from clipmed.evaluators import retrieval
from clipmed.evaluators.base import EvalContext, SplitData
from clipmed.report import chexpert


def _labels(rows):
  labels = np.full((len(rows), 14), np.nan, np.float32)
  for i, row in enumerate(rows):
    for name, value in row.items():
      labels[i, chexpert.INDEX[name]] = value
  return labels


def _split():
  # Reports 0 and 2 have the same text, hence the same embedding.
  report = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1]], np.float32)
  image = np.array([[0.9, 0.5, 0.2], [0.9, 0.8, 0.1], [0.3, 0.6, 0.5], [0.4, 0.1, 0.4]],
                   np.float32)
  labels = _labels([{"Cardiomegaly": 1}, {}, {"Cardiomegaly": -1},
                    {"Cardiomegaly": 1, "Edema": 1}])
  return SplitData(dataset="toy", split="test", image=image, report=report, labels=labels,
                   reports=["A", "B", "A", "C"], study_ids=["0", "1", "2", "3"], extras={})


def test_ranks_hand_computed():
  data = _split()
  ranks = retrieval.ground_truth_ranks(data.image @ data.report.T,
                                       retrieval.text_groups(data.reports))
  # 0: own A 0.9 beats B, C. 1: own B 0.8 < A, A. 2: own A 0.3 < B 0.6, C 0.5.
  # 3: own C 0.4 ties A, A: a tie with another report ranks against the ground truth.
  np.testing.assert_array_equal(ranks, [0, 2, 2, 2])


def test_chance_rate():
  rng = np.random.default_rng(0)
  assert retrieval.chance_recall(np.arange(1000), [10], rng) == {10: 10 / 1000}
  # Reports A, B, A, C: groups A (size 2), B, C in a random order of the 3 groups.
  # k = 1: the first group's queries hit: E[size of the first group] / 4 = (2 + 1 + 1) / 3 / 4.
  chance = retrieval.chance_recall(np.array([0, 1, 0, 2]), [1, 3, 4], rng, num_orders=20000)
  assert chance[1] == pytest.approx(1 / 3, abs=0.01)
  # k = 3: the last group misses when A is not last (4 of 6 orders: 3 of 4 queries hit), else
  # all hit: (4 * 3/4 + 2 * 1) / 6 = 5/6.
  assert chance[3] == pytest.approx(5 / 6, abs=0.01)
  assert chance[4] == pytest.approx(1.0)


def test_retrieval_metrics_hand_computed(monkeypatch):
  monkeypatch.setattr(retrieval, "PRECISION_K", 2)
  config = ml_collections.ConfigDict(dict(task="retrieval", split="test", every_steps=0,
                                          ks=(1, 3), num_bootstrap=100))
  ctx = EvalContext.from_splits({"test": _split()}, embed_texts=None)
  out = retrieval.Retrieval(config).evaluate(ctx)
  assert out["recall@1"].value == pytest.approx(0.25)
  assert out["recall@3"].value == pytest.approx(1.0)
  # Groups A (2 reports), B, C shuffled at random (see test_chance_rate).
  assert out["chance@1"].value == pytest.approx(1 / 3, abs=0.05)
  assert out["chance@3"].value == pytest.approx(5 / 6, abs=0.05)
  assert out["chance@1"].ci_low == out["chance@1"].ci_high == out["chance@1"].value
  # Binary vectors (No Finding rule): {Card}, {No Finding}, {Card?}, {Card, Edema}.
  # Top-2: q0 -> {0, 2} both equal (2's Card left out); q1 -> {0, 2} none (No Finding differs);
  # q2 -> {1, 3} none; q3 -> {0, 2} none (Edema differs).
  assert out["precision@2"].value == pytest.approx(0.25)
  # A -1 that reaches an evaluator is U-Ignore's: query 2's Cardiomegaly is compared with nothing.
  # Top-1 reports 0, 0, 1, 0: TP 1, 0, 0, 1; predicted 1 each; true 1, 1, 0, 2.
  assert out["label_precision"].value == pytest.approx(2 / 4)
  assert out["label_recall"].value == pytest.approx(2 / 4)
  assert out["label_f1"].value == pytest.approx(4 / 8)
  for key in ("recall@1", "label_f1"):
    assert out[key].ci_low <= out[key].value <= out[key].ci_high


def test_perfect_retrieval():
  rng = np.random.default_rng(0)
  emb = rng.normal(size=(50, 16)).astype(np.float32)
  emb /= np.linalg.norm(emb, axis=1, keepdims=True)
  labels = np.where(rng.random((50, 14)) < 0.3, 1.0, np.nan).astype(np.float32)
  data = SplitData(dataset="toy", split="test", image=emb, report=emb, labels=labels,
                   reports=[f"r{i}" for i in range(50)], study_ids=[str(i) for i in range(50)],
                   extras={})
  config = ml_collections.ConfigDict(dict(task="retrieval", split="test", every_steps=0,
                                          ks=(1, 5, 10), num_bootstrap=50))
  out = retrieval.Retrieval(config).evaluate(EvalContext.from_splits({"test": data},
                                                                     embed_texts=None))
  assert out["recall@1"].value == 1.0
  assert out["label_f1"].value == 1.0
  assert out["chance@10"].value == pytest.approx(10 / 50)
