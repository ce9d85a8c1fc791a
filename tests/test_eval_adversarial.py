"""Adversarial (ProbMed-style) paired questions on a hand-computed case."""

import json

import ml_collections
import numpy as np
import pytest

from clipmed.evaluators import adversarial
from clipmed.evaluators.base import EvalContext, SplitData
from clipmed.report import chexpert

NAN = float("nan")
TEXTS = {"card+": [1, 0], "card-": [0, 1], "edema+": [0, 1], "edema-": [1, 0],
         "ptx+": [1, 0], "ptx-": [0, 1]}
CLASSES = ["Cardiomegaly", "Edema", "Pneumothorax"]


def _embed(texts):
  return np.array([TEXTS[t] for t in texts], np.float32)


def _config(tmp_path):
  path = tmp_path / "p.json"
  path.write_text(json.dumps({"classes": {
      "Cardiomegaly": {"positive": ["card+"], "negative": ["card-"]},
      "Edema": {"positive": ["edema+"], "negative": ["edema-"]},
      "Pneumothorax": {"positive": ["ptx+"], "negative": ["ptx-"]}}}))
  return ml_collections.ConfigDict(dict(task="adversarial", split="test", every_steps=0,
                                        prompts=str(path), classes=CLASSES, num_bootstrap=100,
                                        prior="none", calibrate=False))


def _split():
  # Logits: Cardiomegaly and Pneumothorax ~ x - y, Edema ~ y - x.
  image = np.array([[1, 0], [1, 0], [0.8, 0.6], [1, 0], [1, 0], [0, 1]], np.float32)
  rows = [  # (Cardiomegaly, Edema, Pneumothorax)
      (1, 0, -1),      # present card (+, right), absent edema (-, right): correct
      (0, 1, -1),      # present edema (-, wrong), absent card (+, wrong)
      (1, NAN, -1),    # present card (+, right), absent edema (-, right): correct
      (1, -1, 0),      # present card (+, right), absent ptx (+, wrong)
      (1, -1, -1),     # no absent class: not asked
      (NAN, NAN, NAN),  # no present class: not asked
  ]
  labels = np.full((len(rows), 14), np.nan, np.float32)
  for i, row in enumerate(rows):
    for name, value in zip(CLASSES, row):
      labels[i, chexpert.INDEX[name]] = value
  n = len(rows)
  return SplitData(dataset="toy", split="test", image=image, report=image, labels=labels,
                   reports=[str(i) for i in range(n)], study_ids=[str(i) for i in range(n)],
                   extras={})


def test_adversarial_hand_computed(tmp_path):
  ctx = EvalContext.from_splits({"test": _split()}, embed_texts=_embed, logit_scale=5.0)
  out = adversarial.Adversarial(_config(tmp_path)).evaluate(ctx)
  assert out["accuracy"].value == pytest.approx(2 / 4)
  assert out["positive_accuracy"].value == pytest.approx(3 / 4)
  assert out["negative_accuracy"].value == pytest.approx(2 / 4)
  assert out["chance"].value == 0.25


def test_pick_pairs_uniform_and_seeded():
  present = np.zeros((3000, 4), bool)
  present[:, :3] = True
  absent = ~present
  absent[0] = False  # study 0 has no absent class
  eligible, pos, neg = adversarial.pick_pairs(present, absent, np.random.default_rng(0))
  assert not eligible[0] and eligible[1:].all()
  assert set(pos[eligible]) == {0, 1, 2} and set(neg[eligible]) == {3}
  counts = np.bincount(pos[eligible], minlength=3) / eligible.sum()
  np.testing.assert_allclose(counts, 1 / 3, atol=0.04)
  _, pos2, _ = adversarial.pick_pairs(present, absent, np.random.default_rng(0))
  np.testing.assert_array_equal(pos, pos2)
