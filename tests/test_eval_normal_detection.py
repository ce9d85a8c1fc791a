"""Normal case detection on a hand-computed case."""

import ml_collections
import numpy as np
import pytest

from clipmed.evaluators import normal_detection
from clipmed.evaluators.base import EvalContext, SplitData
from clipmed.report import chexpert


def _split():
  report = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.6, 0.8, 0], [0.8, 0, 0.6]], np.float32)
  image = np.array([[1, 0, 0], [0.6, 0.8, 0], [0, 0, 1], [0, 0, 1], [0, 0, 1]], np.float32)
  labels = np.full((5, 14), np.nan, np.float32)
  labels[1, chexpert.INDEX["Support Devices"]] = 1.0   # devices only: still normal
  labels[1, chexpert.INDEX["Pneumothorax"]] = 0.0      # a negation: still normal
  labels[2:, chexpert.INDEX["Cardiomegaly"]] = 1.0
  labels[4, chexpert.INDEX["Cardiomegaly"]] = -1.0     # uncertain counts as abnormal
  return SplitData(dataset="toy", split="test", image=image, report=report, labels=labels,
                   reports=["n0", "n1", "a2", "a3", "a4"], study_ids=list("01234"), extras={})


def _config(num_abnormal):
  return ml_collections.ConfigDict(dict(task="normal_detection", split="test", every_steps=0,
                                        num_abnormal=num_abnormal, num_bootstrap=100))


def test_normal_mask():
  np.testing.assert_array_equal(normal_detection.normal_mask(_split().labels),
                                [True, True, False, False, False])


def test_all_abnormal_candidates_hand_computed():
  ctx = EvalContext.from_splits({"test": _split()}, embed_texts=None)
  out = normal_detection.NormalDetection(_config(2999)).evaluate(ctx)
  # Study 0: own 1.0 vs abnormal (0, 0.6, 0.8): right. Study 1: own 0.8 vs report 3: 1.0: wrong.
  assert out["accuracy"].value == pytest.approx(0.5)
  assert out["chance"].value == pytest.approx(1 / 4)   # capped at the 3 abnormal reports


def test_sampled_candidates_are_seeded():
  # One abnormal candidate per query: study 1 is wrong only when report 3 is drawn.
  results = []
  for seed in range(40):
    ctx = EvalContext.from_splits({"test": _split()}, embed_texts=None, seed=seed)
    out = normal_detection.NormalDetection(_config(1)).evaluate(ctx)
    assert out["chance"].value == 0.5
    results.append(out["accuracy"].value)
  assert set(results) == {0.5, 1.0}
  ctx = EvalContext.from_splits({"test": _split()}, embed_texts=None, seed=3)
  again = normal_detection.NormalDetection(_config(1)).evaluate(ctx)
  assert again["accuracy"].value == results[3]
