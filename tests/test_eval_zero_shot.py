"""Zero-shot classification on a hand-computed case."""

import json

import ml_collections
import numpy as np
import pytest

from clipmed.evaluators import prompt_sets, zero_shot
from clipmed.evaluators.base import EvalContext, SplitData
from clipmed.report import chexpert

NAN = float("nan")
# Prompt embeddings (2-D): Cardiomegaly +x vs -y; Edema the opposite; Pneumothorax anything.
TEXTS = {"card+": [1, 0], "card+ 2": [1, 0], "card-": [0, 1],
         "edema+": [0, 1], "edema-": [1, 0], "ptx+": [1, 0], "ptx-": [0, 1]}


def _embed_texts(texts):
  return np.array([TEXTS[t] for t in texts], np.float32)


def _labels(rows):
  labels = np.full((len(rows), 14), np.nan, np.float32)
  for i, row in enumerate(rows):
    for name, value in row.items():
      labels[i, chexpert.INDEX[name]] = value
  return labels


def _split():
  image = np.array([[1, 0], [0, 1], [0.6, 0.8], [0.8, 0.6], [1, 0]], np.float32)
  labels = _labels([
      {"Cardiomegaly": 1, "Edema": 0},
      {"Cardiomegaly": 0, "Edema": 1},
      {"Cardiomegaly": 1, "Edema": 0},
      {},                                # not mentioned: a negative
      {"Cardiomegaly": -1, "Edema": 0},  # uncertain: left out of Cardiomegaly's AUROC
  ])
  n = len(image)
  return SplitData(dataset="toy", split="test", image=image, report=image, labels=labels,
                   reports=[f"r{i}" for i in range(n)], study_ids=[str(i) for i in range(n)],
                   extras={})


def _prompt_file(tmp_path):
  path = tmp_path / "toy_prompts.json"
  path.write_text(json.dumps({"classes": {
      "Cardiomegaly": {"positive": ["card+", "card+ 2"], "negative": ["card-"]},
      "Edema": {"positive": ["edema+"], "negative": ["edema-"]},
      "Pneumothorax": {"positive": ["ptx+"], "negative": ["ptx-"]},
  }}))
  return str(path)


def _config(prompts, classes, num_bootstrap=200, where=None):
  return ml_collections.ConfigDict(dict(task="zero_shot", split="test", every_steps=0,
                                        prompts=prompts, classes=classes, where=where or {},
                                        num_bootstrap=num_bootstrap, prior="none",
                                        calibrate=False))


def test_prompt_logits_are_scaled_mean_similarity_differences(tmp_path):
  classes = ["Cardiomegaly", "Edema"]
  prompts = prompt_sets.load_prompts(_prompt_file(tmp_path), classes)
  ctx = EvalContext.from_splits({"test": _split()}, embed_texts=_embed_texts, logit_scale=10.0)
  logits = prompt_sets.prompt_logits(ctx, _split().image, prompts, classes)
  np.testing.assert_allclose(logits[:, 0], [10, -10, -2, 2, 10], atol=1e-5)
  np.testing.assert_allclose(logits[:, 1], [-10, 10, 2, -2, -10], atol=1e-5)
  # softmax over (s * mean pos, s * mean neg) == sigmoid(logit)
  prob = np.exp(10 * 0.6) / (np.exp(10 * 0.6) + np.exp(10 * 0.8))
  assert 1 / (1 + np.exp(-logits[2, 0])) == pytest.approx(prob)


def test_zero_shot_auroc_hand_computed(tmp_path):
  ev = zero_shot.ZeroShot(_config(_prompt_file(tmp_path), ["Cardiomegaly", "Edema",
                                                           "Pneumothorax"]))
  ctx = EvalContext.from_splits({"test": _split()}, embed_texts=_embed_texts, logit_scale=10.0)
  out = ev.evaluate(ctx)
  assert {k for k in out if "auroc" in k} == {"auroc/cardiomegaly", "auroc/edema",
                                             "auroc/pneumothorax", "mean_auroc"}
  # Cardiomegaly: positives {0: 10, 2: -2}, negatives {1: -10, 3: 2}; study 4 (uncertain) out.
  # Pairs: 10>-10, 10>2, -2>-10, -2<2 -> 3/4.
  assert out["auroc/cardiomegaly"].value == pytest.approx(0.75)
  # Edema: the only positive (study 1) has the highest logit.
  assert out["auroc/edema"].value == pytest.approx(1.0)
  # Pneumothorax has no positives: NaN, and left out of the mean.
  assert np.isnan(out["auroc/pneumothorax"].value)
  assert out["mean_auroc"].value == pytest.approx(0.875)
  m = out["mean_auroc"]
  assert m.ci_low <= m.value <= m.ci_high


def test_where_keeps_only_the_matching_rows(tmp_path):
  """RSNA-ab style: the AUROC of a class among the rows where another class has a value."""
  ev = zero_shot.ZeroShot(_config(_prompt_file(tmp_path), ["Cardiomegaly"],
                                  where={"Edema": 0.0}))
  ctx = EvalContext.from_splits({"test": _split()}, embed_texts=_embed_texts, logit_scale=10.0)
  # Edema is 0 on studies 0, 2 and 4: two Cardiomegaly positives (4 is uncertain) and no
  # negative left, so the AUROC (0.75 over all studies) is undefined among them.
  assert np.isnan(ev.evaluate(ctx)["auroc/cardiomegaly"].value)
  ev = zero_shot.ZeroShot(_config(_prompt_file(tmp_path), ["Cardiomegaly"],
                                  where={"Pneumothorax": 1.0}))
  assert np.isnan(ev.evaluate(ctx)["auroc/cardiomegaly"].value)  # nobody has a pneumothorax
  ev = zero_shot.ZeroShot(_config(_prompt_file(tmp_path), ["Cardiomegaly"],
                                  where={"Pneumothoraxx": 1.0}))
  with pytest.raises(ValueError, match=r"no class \['Pneumothoraxx'\]"):
    ev.evaluate(ctx)


def test_uncertain_counted_as_negative_would_change_the_result():
  positive, counted = zero_shot.binary_targets(np.array([[1.0], [0.0], [NAN], [-1.0]]))
  np.testing.assert_array_equal(positive[:, 0], [True, False, False, False])
  np.testing.assert_array_equal(counted[:, 0], [True, True, True, False])


def test_bundled_prompts_cover_all_categories():
  prompts = prompt_sets.load_prompts("chexpert", chexpert.CATEGORIES)
  assert set(prompts) == set(chexpert.CATEGORIES)
  for p in prompts.values():
    assert p.positive and p.negative
    assert not set(p.positive) & set(p.negative)


def test_prompt_errors_name_file_and_class(tmp_path):
  with pytest.raises(ValueError, match="no prompts for class 'Fracture'"):
    prompt_sets.load_prompts(_prompt_file(tmp_path), ["Fracture"])
  with pytest.raises(ValueError, match="does not exist"):
    prompt_sets.load_prompts(str(tmp_path / "missing.json"), ["Edema"])
  with pytest.raises(ValueError, match="no prompts for class 'Edemaa'"):
    prompt_sets.load_prompts(_prompt_file(tmp_path), ["Edemaa"])
  with pytest.raises(ValueError, match="lacks the field"):
    zero_shot.ZeroShot(ml_collections.ConfigDict(dict(split="test", num_bootstrap=10)))
