"""Zero-shot multi-class accuracy (CheXpert 5x200 protocol) on a hand-made case."""

import json

import ml_collections
import numpy as np
import pytest

from clipmed.evaluators import zero_shot_multiclass
from clipmed.evaluators.base import EvalContext, SplitData

CLASSES = ("A", "B", "C")
NAN = float("nan")


def _embed_texts(texts):
  """Prompts 'a1', 'a2' -> axis 0, 'b' -> axis 1, 'c' -> axis 2 (unit vectors)."""
  out = np.zeros((len(texts), 3), np.float32)
  for i, t in enumerate(texts):
    out[i, "abc".index(t[0])] = 1.0
  return out


def _prompt_file(tmp_path):
  path = tmp_path / "p.json"
  path.write_text(json.dumps({"classes": {
      "A": {"positive": ["a1", "a2"], "negative": ["b-"]},
      "B": {"positive": ["b1"], "negative": ["c-"]},
      "C": {"positive": ["c1"], "negative": ["a-"]}}}))
  return str(path)


def test_accuracy_on_single_label_images_only(tmp_path):
  image = np.array([[1, 0, 0], [0, 1, 0], [0, 0.6, 0.8], [1, 0, 0], [0, 1, 0], [0, 0, 1]],
                   np.float32)
  labels = np.array([[1, 0, 0],        # A, predicted A: right
                     [0, 1, NAN],      # B, predicted B: right
                     [0, 1, 0],        # B, predicted C: wrong
                     [1, 1, 0],        # two positives: not evaluated
                     [-1, 1, 0],       # uncertain in A: not evaluated
                     [0, 0, 1]],       # C, predicted C: right
                    np.float32)
  split = SplitData(dataset="toy", split="test", image=image, report=image, labels=labels,
                    reports=[""] * 6, study_ids=[str(i) for i in range(6)], extras={},
                    class_names=CLASSES)
  ctx = EvalContext.from_splits({"test": split}, embed_texts=_embed_texts)
  config = ml_collections.ConfigDict(dict(task="zero_shot_multiclass", split="test",
                                          every_steps=0, prompts=_prompt_file(tmp_path),
                                          classes=list(CLASSES), num_bootstrap=200))
  out = zero_shot_multiclass.ZeroShotMulticlass(config).evaluate(ctx)
  assert out["accuracy"].value == pytest.approx(3 / 4)
  assert out["recall/a"].value == 1.0 and out["recall/b"].value == pytest.approx(0.5)
  assert out["recall/c"].value == 1.0
  assert out["num_images"].value == 4 and out["chance"].value == pytest.approx(1 / 3)
  assert out["accuracy"].ci_low <= 0.75 <= out["accuracy"].ci_high
