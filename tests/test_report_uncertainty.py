"""Uncertainty policies (config.data.uncertain_as): U-Ones, U-Zeros, U-Ignore, applied the same
way to the clinical vector (training targets) and the evaluation labels."""

import numpy as np
import pytest

from clipmed import errors
from clipmed.report import chexpert
from configs import common
from input_pipeline import transforms

P, N, U, B = 1.0, 0.0, -1.0, np.nan
NF, CM, PE = (chexpert.INDEX[n] for n in ("No Finding", "Cardiomegaly", "Pleural Effusion"))


def _row(**values):
  row = np.full((chexpert.NUM_CATEGORIES,), B, np.float32)
  for name, value in values.items():
    row[chexpert.INDEX[name.replace("_", " ")]] = value
  return row


# A study whose only finding is uncertain, and one with a positive and an uncertain finding.
ONLY_UNCERTAIN = _row(Cardiomegaly=U, Pneumothorax=N)
MIXED = _row(Cardiomegaly=P, Pleural_Effusion=U)


@pytest.mark.parametrize("policy, only_uncertain, mixed", [
    # (clinical vector entries No Finding, Cardiomegaly, Pleural Effusion) per study.
    ("ones", (0, 1, 0), (0, 1, 1)),
    ("zeros", (1, 0, 0), (0, 1, 0)),
    ("ignore", (0, 0, 0), (0, 1, 0)),
])
def test_clinical_vector_per_policy(policy, only_uncertain, mixed):
  for row, want in ((ONLY_UNCERTAIN, only_uncertain), (MIXED, mixed)):
    vec = chexpert.clinical_vector(row, uncertain_as=policy, normalize=False)
    assert tuple(vec[[NF, CM, PE]].tolist()) == want, policy


@pytest.mark.parametrize("policy, want", [
    ("ones", (P, P)), ("zeros", (N, N)), ("ignore", (U, U))])
def test_evaluation_labels_per_policy(policy, want):
  labels = chexpert.apply_uncertainty_policy(np.stack([ONLY_UNCERTAIN, MIXED]), policy)
  assert (labels[0, CM], labels[1, PE]) == want
  assert labels[1, CM] == P and np.isnan(labels[0, PE])  # positives and blanks untouched


@pytest.mark.parametrize("policy", chexpert.UNCERTAINTY_POLICIES)
def test_training_targets_and_evaluation_labels_agree(policy):
  # The vector built from the evaluation labels equals the training target: one rule.
  rows = np.stack([ONLY_UNCERTAIN, MIXED])
  from_eval = chexpert.clinical_vector(chexpert.apply_uncertainty_policy(rows, policy),
                                       uncertain_as=policy, normalize=False)
  np.testing.assert_array_equal(from_eval,
                                chexpert.clinical_vector(rows, uncertain_as=policy,
                                                         normalize=False))


def test_numbers_of_older_configs_are_the_policies():
  assert chexpert.uncertainty_policy(1.0) == "ones"
  assert chexpert.uncertainty_policy(0.0) == "zeros"
  assert chexpert.uncertainty_policy(" Ignore ") == "ignore"
  with pytest.raises(ValueError, match="U-Ignore"):
    chexpert.uncertainty_policy(0.5)


def test_bad_policy_in_config_is_a_config_error():
  data = common.base_config().data
  assert chexpert.uncertainty_policy(data.uncertain_as) == "ones"  # the default: U-Ones
  data.uncertain_as = "maybe"
  with pytest.raises(errors.ConfigError, match="config.data.uncertain_as='maybe'"):
    transforms.check_data_config(data)
  data.uncertain_as = "zeros"
  transforms.check_data_config(data)


@pytest.mark.parametrize("policy, want", [("ones", P), ("zeros", N), ("ignore", U)])
def test_dataset_evaluation_labels_get_the_config_policy(policy, want):
  # The hook every evaluator's labels come through (input_pipeline.datasets.Dataset).
  from input_pipeline import datasets  # pylint: disable=import-outside-toplevel
  # pipeline.without_image_decoding reads tfds.core.data_sources.base, which tfds imports lazily
  # (a real dataset's TFDS source has imported it by then; this list source has not).
  import tensorflow_datasets.core.data_sources.base  # noqa: F401  pylint: disable=unused-import
  rows = [{"study_id": "s0", "report": "Possible cardiomegaly.", "labels": ONLY_UNCERTAIN},
          {"study_id": "s1", "report": "Cardiomegaly. Possible effusion.", "labels": MIXED}]
  data = common.base_config().data
  data.uncertain_as = policy
  dataset = datasets.Dataset(name="toy", data_config=data, source=lambda split: rows,
                             tokenizer=None, class_names=chexpert.CATEGORIES, splits=("test",),
                             has_reports=True)
  labels = dataset.split_metadata("test")["labels"]
  assert (labels[0, CM], labels[1, PE]) == (want, want)
  assert labels[1, CM] == P
