"""Linear probe: stratified subsets and the logistic-regression head."""

import ml_collections
import numpy as np
import pytest

from clipmed.evaluators import linear_probe
from clipmed.evaluators.base import EvalContext, SplitData
from clipmed.report import chexpert


def test_fraction_names():
  assert [linear_probe.fraction_name(f) for f in (0.01, 0.1, 1.0, 0.005)] == [
      "1pct", "10pct", "100pct", "0.5pct"]


def test_stratified_subset_keeps_rare_class_share():
  positive = np.zeros((1000, 2), bool)
  positive[:300, 0] = True          # common class
  positive[300:320, 1] = True       # rare class: 20 studies
  positive[0:5, 1] = True           # 5 studies have both: their stratum is the rare class
  subset = linear_probe.stratified_subset(positive, 0.1, np.random.default_rng(0))
  assert len(subset) == 100 and len(set(subset)) == 100
  # Strata: rare class 25 studies, common-only 295, none 680 -> quotas 2.5, 29.5, 68,
  # largest remainders, ties to the smaller stratum -> 3, 29, 68.
  assert positive[subset, 1].sum() == 3
  assert (positive[subset, 0] & ~positive[subset, 1]).sum() == 29
  again = linear_probe.stratified_subset(positive, 0.1, np.random.default_rng(0))
  np.testing.assert_array_equal(subset, again)
  np.testing.assert_array_equal(
      linear_probe.stratified_subset(positive, 1.0, np.random.default_rng(0)), np.arange(1000))
  assert len(linear_probe.stratified_subset(positive, 0.0001, np.random.default_rng(0))) == 1


def _split(name, n, rng):
  x = rng.normal(size=(n, 4)).astype(np.float32)
  labels = np.full((n, 14), np.nan, np.float32)
  labels[:, chexpert.INDEX["Cardiomegaly"]] = np.where(x[:, 0] > 0, 1.0, 0.0)
  labels[:, chexpert.INDEX["Edema"]] = np.where(x[:, 1] + 0.3 * x[:, 2] > 0.5, 1.0, np.nan)
  # Uncertain mentions: left out of the loss and of the AUROC.
  labels[:10, chexpert.INDEX["Cardiomegaly"]] = -1.0
  return SplitData(dataset="toy", split=name, image=x, report=x, labels=labels,
                   reports=[str(i) for i in range(n)], study_ids=[str(i) for i in range(n)],
                   extras={})


def test_linear_probe_learns_separable_classes():
  rng = np.random.default_rng(0)
  splits = {"train": _split("train", 400, rng), "test": _split("test", 200, rng)}
  config = ml_collections.ConfigDict(dict(
      task="linear_probe", split="test", train_split="train", every_steps=0,
      classes=["Cardiomegaly", "Edema"], fractions=(0.1, 1.0), weight_decay=1e-3,
      max_iterations=100, num_bootstrap=50))
  ctx = EvalContext.from_splits(splits, embed_texts=None, seed=0)
  out = linear_probe.LinearProbe(config).evaluate(ctx)
  assert set(out) == {f"{p}/{m}" for p in ("10pct", "100pct")
                      for m in ("auroc/cardiomegaly", "auroc/edema", "mean_auroc")}
  assert out["100pct/auroc/cardiomegaly"].value > 0.97
  assert out["100pct/auroc/edema"].value > 0.95
  assert out["10pct/mean_auroc"].value > 0.8
  again = linear_probe.LinearProbe(config).evaluate(ctx)
  assert again["10pct/mean_auroc"].value == pytest.approx(out["10pct/mean_auroc"].value,
                                                          abs=1e-6)


def test_bad_fraction_is_reported():
  config = ml_collections.ConfigDict(dict(
      task="linear_probe", split="test", train_split="train", every_steps=0,
      classes=["Edema"], fractions=(0.0,), weight_decay=0.0, max_iterations=10,
      num_bootstrap=0))
  with pytest.raises(ValueError, match=r"fractions: 0.0 is not in \(0, 1\]"):
    linear_probe.LinearProbe(config)
