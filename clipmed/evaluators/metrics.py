"""Metrics as weighted statistics, and a vectorised, seeded bootstrap.

Every statistic here takes a weight matrix `w` [R, N]: row r gives the multiplicity of each of the N
studies in resample r. The point estimate is the statistic at w = ones [1, N]; a bootstrap resample
is a row of multinomial counts. Writing each statistic once in weighted form makes the point
estimate and its R resamples one vectorised computation, and lets several metrics of one task share
the same (paired) resamples.
"""

import warnings
from collections.abc import Callable, Mapping

import numpy as np

from clipmed.evaluators.base import Metric

# Upper bound on R * N elements per chunk of resample weights (float64: 32 MB).
_MAX_CHUNK_ELEMENTS = 4_000_000

StatFn = Callable[[np.ndarray], Mapping[str, np.ndarray]]  # w [R, N] -> {name: [R]}


def resample_weights(n: int, num_resamples: int, rng: np.random.Generator) -> np.ndarray:
  """Multiplicities of N studies in `num_resamples` bootstrap resamples. -> [R, N] float64."""
  idx = rng.integers(0, n, size=(num_resamples, n))                  # [R, N]
  flat = idx + n * np.arange(num_resamples)[:, None]
  counts = np.bincount(flat.ravel(), minlength=num_resamples * n)
  return counts.reshape(num_resamples, n).astype(np.float64)


def weighted_mean(values: np.ndarray, w: np.ndarray) -> np.ndarray:
  """Weighted mean of `values` [N] under each weight row of w [R, N]; NaN where all weights are 0.

  Rows of `values` that must not count (e.g. excluded studies) should get weight 0 via the mask
  multiplied into w by the caller.
  """
  values = np.asarray(values, dtype=np.float64)
  total = w.sum(axis=1)                                               # [R]
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(total > 0, (w @ values) / total, np.nan)


def weighted_ratio(numerator: np.ndarray, denominator: np.ndarray, w: np.ndarray) -> np.ndarray:
  """sum_i w_i num_i / sum_i w_i den_i per weight row (micro-averaging). -> [R], NaN when 0/0."""
  num = w @ np.asarray(numerator, dtype=np.float64)
  den = w @ np.asarray(denominator, dtype=np.float64)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(den > 0, num / den, np.nan)


def weighted_auroc(positive: np.ndarray, scores: np.ndarray, w: np.ndarray) -> np.ndarray:
  """Area under the ROC curve per weight row, ties counted one half (Mann-Whitney U / (P * Q)).

  AUROC = P(score of a random positive > score of a random negative) + 0.5 P(equal), where the
  pairs are weighted by the multiplicities. Studies with weight 0 do not count.

  Args:
    positive: [N] bool ground truth.
    scores: [N] higher = more likely positive.
    w: [R, N] nonnegative study weights.

  Returns:
    [R] float64; NaN for a row without weighted positives or negatives.
  """
  positive = np.asarray(positive, dtype=bool)
  scores = np.asarray(scores, dtype=np.float64)
  order = np.argsort(scores, kind="stable")
  s_sorted = scores[order]
  w_sorted = w[:, order]                                               # [R, N]
  pos_sorted = positive[order]
  # Group equal scores: a positive beats every negative in lower groups and half of its own group.
  starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])  # [G]
  w_pos = np.add.reduceat(w_sorted * pos_sorted, starts, axis=1)       # [R, G]
  w_neg = np.add.reduceat(w_sorted * ~pos_sorted, starts, axis=1)      # [R, G]
  neg_below = np.cumsum(w_neg, axis=1) - w_neg                         # [R, G]
  u = np.sum(w_pos * (neg_below + 0.5 * w_neg), axis=1)                # [R]
  denom = w_pos.sum(axis=1) * w_neg.sum(axis=1)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(denom > 0, u / denom, np.nan)


def auroc(positive: np.ndarray, scores: np.ndarray, mask: np.ndarray | None = None) -> float:
  """Point AUROC (ties one half) over the studies where `mask` [N] is True (all by default)."""
  w = np.ones((1, len(scores))) if mask is None else np.asarray(mask, np.float64)[None, :]
  return float(weighted_auroc(positive, scores, w)[0])


def recall_at_k(ranks: np.ndarray, k: int) -> float:
  """Fraction of queries whose ground truth has 0-based rank < k. ranks: [N] int."""
  return float(np.mean(np.asarray(ranks) < k))


def accuracy(correct: np.ndarray) -> float:
  """Fraction of True in `correct` [N]."""
  return float(np.mean(np.asarray(correct, dtype=np.float64)))


def constant(value: float) -> Metric:
  """A deterministic quantity (e.g. a chance rate): its interval is the value itself."""
  return Metric(float(value), float(value), float(value))


def _nan_percentiles(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """2.5th and 97.5th percentiles over axis 0, ignoring NaN (all-NaN columns give NaN)."""
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", category=RuntimeWarning)
    low, high = np.nanpercentile(samples, [2.5, 97.5], axis=0)
  return low, high


def bootstrap(stat_fn: StatFn, n: int, *, num_resamples: int, seed: int) -> dict[str, Metric]:
  """Point estimates and seeded percentile-bootstrap 95% intervals of several statistics.

  All statistics share the same resamples of the N studies (paired), which come from
  np.random.default_rng(seed) in fixed-size chunks, so results depend only on (seed, N, R).

  Args:
    stat_fn: w [R, N] -> {name: [R]} weighted statistics (see the module docstring).
    n: number of studies N.
    num_resamples: R; 0 gives NaN intervals.
    seed: bootstrap seed.

  Returns:
    {name: Metric}.
  """
  point = {k: float(np.asarray(v)[0]) for k, v in stat_fn(np.ones((1, n))).items()}
  if num_resamples <= 0 or n == 0:
    return {k: Metric(v, float("nan"), float("nan")) for k, v in point.items()}
  rng = np.random.default_rng(seed)
  chunk = max(1, _MAX_CHUNK_ELEMENTS // max(n, 1))
  parts: dict[str, list[np.ndarray]] = {k: [] for k in point}
  done = 0
  while done < num_resamples:
    r = min(chunk, num_resamples - done)
    stats = stat_fn(resample_weights(n, r, rng))
    for k in point:
      parts[k].append(np.asarray(stats[k], dtype=np.float64))
    done += r
  out = {}
  for k, v in point.items():
    low, high = _nan_percentiles(np.concatenate(parts[k]))
    out[k] = Metric(v, float(low), float(high))
  return out
