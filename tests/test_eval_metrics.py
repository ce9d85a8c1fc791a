"""Metrics and the bootstrap of clipmed.evaluators.metrics, on hand-computed cases."""

import time

import numpy as np
import pytest

from clipmed.evaluators import metrics


def _pairwise_auroc(positive, scores):
  """Reference: mean over (positive, negative) pairs of 1[s_p > s_n] + 0.5 1[s_p == s_n]."""
  sp = scores[positive][:, None]
  sn = scores[~positive][None, :]
  return float(np.mean((sp > sn) + 0.5 * (sp == sn)))


def test_auroc_hand_computed():
  # Pairs (0.9>0.5, 0.9>0.1, 0.4<0.5, 0.4>0.1): 3 of 4.
  assert metrics.auroc(np.array([1, 1, 0, 0], bool), np.array([0.9, 0.4, 0.5, 0.1])) == 0.75


def test_auroc_ties_count_one_half():
  assert metrics.auroc(np.array([True, False]), np.array([0.5, 0.5])) == 0.5
  # Positives 0.3, 0.7; negative 0.3: a tie (0.5) and a win (1) -> 0.75.
  assert metrics.auroc(np.array([True, True, False]), np.array([0.3, 0.7, 0.3])) == 0.75
  # All scores equal: chance.
  assert metrics.auroc(np.array([1, 0, 1, 0, 0], bool), np.zeros(5)) == 0.5


def test_auroc_matches_pairwise_reference_with_ties():
  rng = np.random.default_rng(0)
  positive = rng.random(200) < 0.3
  scores = rng.integers(0, 10, 200).astype(float)  # many ties
  assert metrics.auroc(positive, scores) == pytest.approx(_pairwise_auroc(positive, scores))


def test_weighted_auroc_equals_auroc_of_repeated_sample():
  rng = np.random.default_rng(1)
  positive = rng.random(30) < 0.5
  scores = rng.integers(0, 5, 30).astype(float)
  counts = rng.integers(0, 4, 30)
  expected = _pairwise_auroc(np.repeat(positive, counts), np.repeat(scores, counts))
  got = metrics.weighted_auroc(positive, scores, counts[None, :].astype(float))
  assert got.shape == (1,)
  assert got[0] == pytest.approx(expected)


def test_auroc_mask_and_undefined():
  positive = np.array([1, 0, 0, 1], bool)
  scores = np.array([0.9, 0.1, 0.95, 0.2])
  # Leaving out study 2 (the negative that beats both positives): 2 of 2 pairs.
  assert metrics.auroc(positive, scores, mask=np.array([1, 1, 0, 1], bool)) == 1.0
  assert np.isnan(metrics.auroc(np.array([True, True]), np.array([0.1, 0.2])))


def test_recall_accuracy_and_ratios():
  assert metrics.recall_at_k(np.array([0, 3, 1, 10]), 1) == 0.25
  assert metrics.recall_at_k(np.array([0, 3, 1, 10]), 5) == 0.75
  assert metrics.accuracy(np.array([True, False, True, True])) == 0.75
  w = np.array([[1.0, 1.0, 1.0], [2.0, 0.0, 1.0]])
  np.testing.assert_allclose(metrics.weighted_mean(np.array([1.0, 0.0, 0.0]), w), [1 / 3, 2 / 3])
  np.testing.assert_allclose(
      metrics.weighted_ratio(np.array([1.0, 1.0, 0.0]), np.array([2.0, 1.0, 1.0]), w),
      [2 / 4, 2 / 5])


def test_resample_weights_are_multinomial_counts():
  w = metrics.resample_weights(7, 50, np.random.default_rng(0))
  assert w.shape == (50, 7)
  np.testing.assert_array_equal(w.sum(axis=1), 7)
  assert np.all(w >= 0) and np.all(w == np.round(w))


def test_bootstrap_seeded_and_sensible():
  rng = np.random.default_rng(2)
  x = (rng.random(1000) < 0.5).astype(float)

  def stat_fn(w):
    return {"mean": metrics.weighted_mean(x, w), "const": np.full(w.shape[0], 0.25)}

  a = metrics.bootstrap(stat_fn, 1000, num_resamples=1000, seed=3)
  b = metrics.bootstrap(stat_fn, 1000, num_resamples=1000, seed=3)
  c = metrics.bootstrap(stat_fn, 1000, num_resamples=1000, seed=4)
  assert a == b
  assert a["mean"] != c["mean"]
  m = a["mean"]
  assert m.value == pytest.approx(x.mean())
  assert m.ci_low < m.value < m.ci_high
  # Normal approximation: half-width 1.96 * sqrt(p (1 - p) / N) ~ 0.031.
  assert (m.ci_high - m.ci_low) / 2 == pytest.approx(1.96 * np.sqrt(0.25 / 1000), rel=0.2)
  assert a["const"] == metrics.Metric(0.25, 0.25, 0.25)


def test_bootstrap_without_resamples_gives_nan_interval():
  out = metrics.bootstrap(lambda w: {"m": w.sum(axis=1)}, 4, num_resamples=0, seed=0)
  assert out["m"].value == 4 and np.isnan(out["m"].ci_low) and np.isnan(out["m"].ci_high)


def test_bootstrap_auroc_speed():
  rng = np.random.default_rng(0)
  positive = rng.random(1000) < 0.3
  scores = rng.normal(size=1000) + positive

  def stat_fn(w):
    return {"auroc": metrics.weighted_auroc(positive, scores, w)}

  start = time.perf_counter()
  out = metrics.bootstrap(stat_fn, 1000, num_resamples=1000, seed=0)
  elapsed = time.perf_counter() - start
  assert out["auroc"].ci_low < out["auroc"].value < out["auroc"].ci_high
  assert elapsed < 2.0, f"1000 AUROC resamples on N=1000 took {elapsed:.2f} s"
