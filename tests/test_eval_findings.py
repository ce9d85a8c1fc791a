"""Finding-level evaluation: the CheXpert hierarchy, within-image discrimination, calibration of
the zero-shot decision, the image-mean share and the shuffled adversarial baseline, each on a
hand-computed case."""

import json

import ml_collections
import numpy as np
import pytest

from clipmed import errors
from clipmed.evaluators import adversarial, findings, metrics, prompt_sets, zero_shot
from clipmed.evaluators.base import EvalContext, SplitData
from clipmed.report import chexpert


def _point(stat_fn, n):
  return {k: float(np.asarray(v)[0]) for k, v in stat_fn(np.ones((1, n))).items()}


def test_hierarchy_relatives_are_not_askable_as_absent():
  classes = ["Lung Opacity", "Edema", "Cardiomegaly", "Enlarged Cardiomediastinum", "Pneumonia",
             "Consolidation", "Pneumothorax"]
  assert findings.ancestors("Pneumonia") == ("Consolidation", "Lung Opacity")
  assert findings.ancestors("Pneumothorax") == ()
  present = np.zeros((4, 7), bool)
  present[0, classes.index("Edema")] = True
  present[1, classes.index("Pneumonia")] = True
  present[2, classes.index("Cardiomegaly")] = True
  present[3, classes.index("Lung Opacity")] = True
  askable = findings.askable_absent(present, ~present, classes)
  col = {name: askable[:, i] for i, name in enumerate(classes)}
  # Edema implies Lung Opacity; Pneumonia implies Consolidation and Lung Opacity.
  assert not col["Lung Opacity"][0] and not col["Lung Opacity"][1]
  assert not col["Consolidation"][1] and col["Consolidation"][0]
  assert not col["Enlarged Cardiomediastinum"][2] and col["Enlarged Cardiomediastinum"][0]
  # A present parent leaves its children askable; unrelated findings stay askable everywhere.
  assert col["Edema"][3] and col["Pneumonia"][3]
  assert col["Pneumothorax"].all()
  # Another vocabulary (ChestX-ray14) keeps the relations it shares: Pneumonia -> Consolidation.
  cxr14 = ["Pneumonia", "Consolidation", "Effusion"]
  out = findings.askable_absent(np.array([[True, False, False]]), np.array([[False, True, True]]),
                                cxr14)
  np.testing.assert_array_equal(out, [[False, False, True]])


def test_within_image_counts_pairs_and_ties():
  scores = np.array([[2.0, 1.0, 3.0],     # present 0; absent 1 (2 > 1), 2 (2 < 3): 1/2
                     [0.0, 1.0, 1.0],     # present 1, 2; absent 0: wins 2 of 2: 1
                     [1.0, 1.0, 0.0],     # present 0; absent 1 (tie): 1/2
                     [5.0, 0.0, 0.0]])    # nothing present: no pair
  present = np.array([[1, 0, 0], [0, 1, 1], [1, 0, 0], [0, 0, 0]], bool)
  askable = np.array([[0, 1, 1], [1, 0, 0], [0, 1, 0], [1, 1, 1]], bool)
  fraction, has_pair = findings.within_image_scores(scores, present, askable)
  np.testing.assert_allclose(fraction[:3], [0.5, 1.0, 0.5])
  np.testing.assert_array_equal(has_pair, [True, True, True, False])


def test_image_mean_share_separates_an_abnormality_score_from_independent_findings():
  rng = np.random.default_rng(0)
  additive = rng.normal(size=(200, 1)) + rng.normal(size=(1, 5))      # one score per image
  share = findings.image_mean_share(additive, np.ones((1, 200)))
  assert share[0] == pytest.approx(1.0)
  balanced = np.array([[1.0, -1.0], [-1.0, 1.0]] * 10)                 # image means all equal
  assert findings.image_mean_share(balanced, np.ones((1, 20)))[0] == pytest.approx(0.0)
  independent = rng.normal(size=(20000, 5))
  assert findings.image_mean_share(independent, np.ones((1, 20000)))[0] == pytest.approx(
      0.2, abs=0.01)


def _decision_case():
  classes = ["Cardiomegaly", "Edema"]
  scores = np.array([[1.0, -1.0], [2.0, 0.5], [0.5, -2.0], [-1.0, 3.0], [3.0, -3.0]])
  labels = np.array([[1, 0], [0, 1], [0, np.nan], [0, 1], [-1, 0]], np.float32)
  return classes, scores, labels


def test_calibration_and_within_image_hand_computed():
  classes, scores, labels = _decision_case()
  positive, counted = zero_shot.binary_targets(labels)
  askable = findings.askable_absent(positive & counted, ~positive & counted, classes)
  out = _point(zero_shot.decision_statistics(scores, positive, counted, askable, classes), 5)
  # Cardiomegaly: counted rows 0-3 (row 4 uncertain); says yes on 0, 1, 2; present on 0.
  assert out["positive_rate/cardiomegaly"] == pytest.approx(3 / 4)
  assert out["prevalence/cardiomegaly"] == pytest.approx(1 / 4)
  # Edema: counted rows 0-4; yes on 1, 3; present on 1, 3.
  assert out["positive_rate/edema"] == pytest.approx(2 / 5)
  assert out["prevalence/edema"] == pytest.approx(2 / 5)
  assert out["max_rate_over_prevalence"] == pytest.approx(3.0)
  # Pairs: row 0 card 1 > edema -1: 1; row 1 edema 0.5 < card 2: 0; row 3 edema 3 > card -1: 1.
  # Row 2 has nothing present, row 4 nothing present (card uncertain).
  assert out["within_image"] == pytest.approx(2 / 3)


def _prompt_config(tmp_path, task, classes):
  path = tmp_path / "p.json"
  path.write_text(json.dumps({"classes": {
      c: {"positive": [f"{c}+"], "negative": [f"{c}-"]} for c in classes}}))
  return ml_collections.ConfigDict(dict(task=task, split="test", every_steps=0, prompts=str(path),
                                        classes=classes, where={}, num_bootstrap=200,
                                        prior="none", calibrate=False))


def _split(scores, labels_by_class):
  """A split whose zero-shot logits are `scores` (logit scale 1): image = scores, prompt c+ =
  e_c, prompt c- = 0."""
  n, k = scores.shape
  labels = np.full((n, 14), np.nan, np.float32)
  for name, column in labels_by_class.items():
    labels[:, chexpert.INDEX[name]] = column
  return SplitData(dataset="toy", split="test", image=scores.astype(np.float32),
                   report=scores.astype(np.float32), labels=labels,
                   reports=[f"r{i}" for i in range(n)], study_ids=[f"s{i}" for i in range(n)],
                   extras={})


def _embedder(classes):
  def embed(texts):
    out = np.zeros((len(texts), len(classes)), np.float32)
    for row, text in enumerate(texts):
      if text.endswith("+"):
        out[row, classes.index(text[:-1])] = 1.0
    return out
  return embed


def test_zero_shot_reports_the_decision_metrics_and_records_examples(tmp_path):
  classes, scores, labels = _decision_case()
  data = _split(scores, dict(zip(classes, labels.T)))
  ctx = EvalContext(dataset="toy", logit_scale=1.0, seed=0, load_split=lambda c, s: data,
                    embed_texts=_embedder(classes))
  # EvalContext normalises text rows; a zero row stays zero, so logits = scores exactly.
  ev = zero_shot.ZeroShot(_prompt_config(tmp_path, "zero_shot", classes))
  out = ev.evaluate(ctx)
  assert out["within_image"].value == pytest.approx(2 / 3)
  assert out["max_rate_over_prevalence"].value == pytest.approx(3.0)
  assert out["within_image"].ci_low <= 2 / 3 <= out["within_image"].ci_high
  ex = ctx.examples["zero_shot"]
  assert str(ex["task"]) == "zero_shot"
  np.testing.assert_array_equal(ex["study_ids"], [f"s{i}" for i in range(5)])
  np.testing.assert_allclose(ex["scores"], scores, atol=1e-6)
  again = metrics.bootstrap(zero_shot.ZeroShot.statistics(ex), 5, num_resamples=200, seed=0)
  assert again == out


def test_shuffled_baseline_hand_computed():
  # Answers (logit > 0): image 0 yes/no, image 1 yes/yes, image 2 no/no.
  examples = dict(scores=np.array([[1.0, -1.0], [1.0, 1.0], [-1.0, -1.0]]),
                  eligible=np.array([True, True, True]), pos_class=np.array([0, 1, 0]),
                  neg_class=np.array([1, 0, 1]))
  out = _point(adversarial.Adversarial.statistics(examples), 3)
  assert out["accuracy"] == pytest.approx(1 / 3)
  # Image 2's question (A present, B absent) is answered right by image 0's pattern only.
  assert out["shuffled_accuracy"] == pytest.approx((0 + 0 + 1 / 2) / 3)
  assert out["shuffled_positive_accuracy"] == pytest.approx((1 / 2 + 0 + 1) / 3)
  assert out["shuffled_negative_accuracy"] == pytest.approx(1 / 2)
  assert out["accuracy_over_shuffled"] == pytest.approx(1 / 3 - 1 / 6)


def test_the_shuffled_baseline_matches_a_content_free_model_and_not_an_informed_one():
  rng = np.random.default_rng(1)
  n, k = 2000, 6
  present = rng.random((n, k)) < 0.3
  pairs = dict(zip(("eligible", "pos_class", "neg_class"),
                   adversarial.pick_pairs(present, ~present, rng)))
  # Answers unrelated to the image (per-class "yes" rates 0.2 .. 0.7): shuffling changes nothing.
  blind = rng.random((n, k)) < np.linspace(0.2, 0.7, k)
  out = metrics.bootstrap(adversarial.Adversarial.statistics(
      dict(scores=np.where(blind, 1.0, -1.0), **pairs)), n, num_resamples=300, seed=0)
  diff = out["accuracy_over_shuffled"]
  assert diff.ci_low < 0.0 < diff.ci_high
  assert out["accuracy"].value == pytest.approx(out["shuffled_accuracy"].value, abs=0.03)
  # Answers that are the labels: every question right, far above the baseline.
  out = metrics.bootstrap(adversarial.Adversarial.statistics(
      dict(scores=np.where(present, 1.0, -1.0), **pairs)), n, num_resamples=300, seed=0)
  assert out["accuracy"].value == 1.0
  assert out["accuracy_over_shuffled"].ci_low > 0.5


def test_adversarial_never_asks_an_implied_parent_as_absent(tmp_path):
  classes = ["Lung Opacity", "Edema"]
  n = 50
  scores = np.tile([[1.0, 1.0]], (n, 1))
  data = _split(scores, {"Lung Opacity": np.full(n, np.nan), "Edema": np.ones(n)})
  ctx = EvalContext(dataset="toy", logit_scale=1.0, seed=0, load_split=lambda c, s: data,
                    embed_texts=_embedder(classes))
  out = adversarial.Adversarial(_prompt_config(tmp_path, "adversarial", classes)).evaluate(ctx)
  # Every image has Edema; Lung Opacity (blank) is its parent, so no question can be asked.
  assert not ctx.examples["adversarial"]["eligible"].any()
  assert np.isnan(out["accuracy"].value)


def test_prior_log_odds_hand_computed():
  positive = np.array([[1, 0], [0, 0], [0, 0], [1, 1]], bool)
  counted = np.array([[1, 1], [1, 1], [1, 0], [1, 1]], bool)  # row 2 uncertain for class 1
  out = prompt_sets.prior_log_odds(positive, counted)
  # Class 0: 2 of 4 -> (2.5 / 2.5); class 1: 1 of 3 -> (1.5 / 2.5); never infinite.
  np.testing.assert_allclose(out, [0.0, np.log(1.5 / 2.5)])
  assert np.all(np.isfinite(prompt_sets.prior_log_odds(np.zeros((3, 1), bool),
                                                       np.ones((3, 1), bool))))


def _prior_case(tmp_path, task, prior, train_rows, calibrate=False, train_logit=0.0):
  """Class A with logit +1 on every test image; its rate on the train split is the prior; the
  train images have logit `train_logit` for it (and 0 for Edema)."""
  classes = ["Cardiomegaly", "Edema"]
  n = 10
  scores = np.tile([[1.0, -1.0]], (n, 1))
  test = _split(scores, {"Cardiomegaly": np.r_[np.ones(2), np.zeros(n - 2)],
                         "Edema": np.zeros(n)})
  train = _split(np.tile([[train_logit, 0.0]], (len(train_rows), 1)),
                 {"Cardiomegaly": np.asarray(train_rows, np.float32),
                  "Edema": np.zeros(len(train_rows))})
  splits = {"test": test, "train": train}
  ctx = EvalContext(dataset="toy", logit_scale=1.0, seed=0, load_split=lambda c, s: splits[s],
                    embed_texts=_embedder(classes),
                    load_labels=lambda s: splits[s].labels)
  config = _prompt_config(tmp_path, task, classes)
  config.prior = prior
  config.calibrate = calibrate
  evaluator = (zero_shot.ZeroShot if task == "zero_shot" else adversarial.Adversarial)(config)
  return evaluator.evaluate(ctx), ctx


def test_the_decision_adds_the_prior_log_odds_of_the_train_split(tmp_path):
  # Train rate of Cardiomegaly 1 in 19: prior log odds log(1.5 / 18.5) = -2.5, so the logit of
  # +1 no longer says "present"; Edema (rate 0) answers "no" with or without the prior.
  out, ctx = _prior_case(tmp_path, "zero_shot", "train", [1] + [0] * 18)
  np.testing.assert_allclose(ctx.examples["zero_shot"]["prior_log_odds"],
                             [np.log(1.5 / 18.5), np.log(0.5 / 19.5)])
  np.testing.assert_array_equal(ctx.examples["zero_shot"]["decision_offset"],
                                ctx.examples["zero_shot"]["prior_log_odds"])
  assert out["positive_rate/cardiomegaly"].value == 0.0
  assert out["mean_auroc"].value == pytest.approx(0.5)  # rankings ignore the prior
  again = metrics.bootstrap(zero_shot.ZeroShot.statistics(ctx.examples["zero_shot"]), 10,
                            num_resamples=200, seed=0)
  assert again["positive_rate/cardiomegaly"] == out["positive_rate/cardiomegaly"]
  # A common class (rate 15 of 19, log odds +1.2) keeps the "yes".
  out, _ = _prior_case(tmp_path, "zero_shot", "train", [1] * 15 + [0] * 4)
  assert out["positive_rate/cardiomegaly"].value == 1.0
  # prior="none": the logit alone, as do examples saved without prior_log_odds.
  out, ctx = _prior_case(tmp_path, "zero_shot", "none", [1] + [0] * 18)
  assert out["positive_rate/cardiomegaly"].value == 1.0
  old = {k: v for k, v in ctx.examples["zero_shot"].items()
         if k not in ("prior_log_odds", "decision_offset")}
  assert _point(zero_shot.ZeroShot.statistics(old), 10)["positive_rate/cardiomegaly"] == 1.0


def test_calibrated_offset_matches_the_mean_probability_to_the_rate():
  # Equal logits c: sigmoid(c + b) = pi exactly when b = logit(pi) - c.
  np.testing.assert_allclose(
      prompt_sets.calibrated_offset(np.full((7, 2), [3.0, -2.0]), np.array([-1.5, 0.4])),
      [-4.5, 2.4], atol=1e-12)
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(500, 3)) * [1.0, 4.0, 40.0]
  rate_log_odds = np.log([0.03 / 0.97, 0.5 / 0.5, 0.9 / 0.1])
  offset = prompt_sets.calibrated_offset(logits, rate_log_odds)
  mean = (1.0 / (1.0 + np.exp(-(logits + offset)))).mean(axis=0)
  np.testing.assert_allclose(mean, [0.03, 0.5, 0.9], rtol=1e-10)
  # A spread of logits needs a larger shift than the prior log odds for a rare class.
  assert offset[0] < rate_log_odds[0]


def test_calibration_fits_the_offset_on_the_prior_split_images(tmp_path):
  # Train rate 15 of 19 (prior log odds log(15.5 / 4.5) = +1.24): the prior alone keeps the test
  # logit +1 a "yes". The train images all score +4, so the calibrated offset is 1.24 - 4 and
  # the same logit +1 becomes a "no"; Edema (train logit 0) keeps its prior log odds.
  rows = [1] * 15 + [0] * 4
  out, _ = _prior_case(tmp_path, "zero_shot", "train", rows)
  assert out["positive_rate/cardiomegaly"].value == 1.0
  out, ctx = _prior_case(tmp_path, "zero_shot", "train", rows, calibrate=True, train_logit=4.0)
  examples = ctx.examples["zero_shot"]
  np.testing.assert_allclose(examples["prior_log_odds"], [np.log(15.5 / 4.5), np.log(0.5 / 19.5)])
  np.testing.assert_allclose(examples["decision_offset"],
                             examples["prior_log_odds"] - [4.0, 0.0], atol=1e-12)
  assert out["positive_rate/cardiomegaly"].value == 0.0
  assert out["mean_auroc"].value == pytest.approx(0.5)
  # Saved examples decide with the recorded offset, not the prior.
  assert _point(zero_shot.ZeroShot.statistics(examples), 10)["positive_rate/cardiomegaly"] == 0.0
  # Examples saved before decision_offset existed decide with their prior_log_odds.
  older = {k: v for k, v in examples.items() if k != "decision_offset"}
  assert _point(zero_shot.ZeroShot.statistics(older), 10)["positive_rate/cardiomegaly"] == 1.0
  out, ctx = _prior_case(tmp_path, "adversarial", "train", rows, calibrate=True, train_logit=4.0)
  assert out["positive_accuracy"].value == 0.0 and out["negative_accuracy"].value == 1.0
  out, ctx = _prior_case(tmp_path, "adversarial", "train", rows, calibrate=True, train_logit=-4.0)
  assert out["positive_accuracy"].value == 1.0


def test_adversarial_answers_with_the_prior(tmp_path):
  # Images 0-1 have Cardiomegaly (asked as present), all others nothing present (not asked).
  out, _ = _prior_case(tmp_path, "adversarial", "none", [1] + [0] * 18)
  assert out["positive_accuracy"].value == 1.0 and out["accuracy"].value == 1.0
  out, _ = _prior_case(tmp_path, "adversarial", "train", [1] + [0] * 18)
  assert out["positive_accuracy"].value == 0.0 and out["negative_accuracy"].value == 1.0


def test_a_bad_prior_is_a_config_error(tmp_path):
  for bad in ("", 3):
    config = _prompt_config(tmp_path, "zero_shot", ["Cardiomegaly", "Edema"])
    del config["prior"]
    config.prior = bad
    with pytest.raises(errors.ConfigError, match="prior"):
      zero_shot.ZeroShot(config)
  with pytest.raises(errors.ConfigError, match="no rows"):
    _prior_case(tmp_path, "zero_shot", "train", [])
  config = _prompt_config(tmp_path, "zero_shot", ["Cardiomegaly", "Edema"])
  del config["calibrate"]
  config.calibrate = "yes"
  with pytest.raises(errors.ConfigError, match="calibrate='yes': give True or False"):
    zero_shot.ZeroShot(config)
  with pytest.raises(errors.ConfigError,
                     match=r"calibrate=True \(the default\) needs a prior split"):
    _prior_case(tmp_path, "adversarial", "none", [1, 0], calibrate=True)


def test_a_prior_split_the_dataset_lacks_names_the_field(tmp_path):
  """A dataset without the prior split (real datasets raise ConfigError naming their splits)."""
  def load_labels(split):
    raise errors.ConfigError(f"dataset 'toy' has the splits ['test'], not {split!r}")
  ctx = EvalContext(dataset="toy", logit_scale=1.0, seed=0, load_split=lambda c, s: None,
                    embed_texts=_embedder(["Cardiomegaly", "Edema"]), load_labels=load_labels)
  config = _prompt_config(tmp_path, "zero_shot", ["Cardiomegaly", "Edema"])
  config.prior = "validation"
  with pytest.raises(errors.ConfigError) as info:
    zero_shot.ZeroShot(config).decision(ctx, [0, 1])
  assert str(info.value).startswith("config.evals.zero_shot.prior='validation': dataset 'toy' "
                                    "has the splits ['test'], not 'validation'")
  assert str(info.value).endswith("or decide on the logit alone: "
                                  "--config.evals.zero_shot.prior=none "
                                  "--config.evals.zero_shot.calibrate=False")
