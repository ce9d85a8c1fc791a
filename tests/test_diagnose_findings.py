"""The helpers of scripts/diagnose_findings.py on hand-computed cases (the script itself needs a
trained checkpoint; README, "Why the demo model scores abnormality", shows its output)."""

import importlib.util
import os

import numpy as np
import pytest

from clipmed.report import chexpert

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location(
    "diagnose_findings", os.path.join(ROOT, "scripts", "diagnose_findings.py"))
diagnose = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(diagnose)


def test_participation_ratio_counts_the_dimensions_in_use():
  rng = np.random.default_rng(0)
  line = rng.normal(size=(500, 1)) * np.ones((1, 8))                  # one direction
  assert diagnose.participation_ratio(line) == pytest.approx(1.0)
  isotropic = rng.normal(size=(20000, 8))
  assert diagnose.participation_ratio(isotropic) == pytest.approx(8.0, rel=0.02)


def test_pair_kinds_hand_computed():
  labels = np.full((4, 14), np.nan, np.float32)
  labels[0, chexpert.INDEX["Cardiomegaly"]] = 1
  labels[1, chexpert.INDEX["Cardiomegaly"]] = 1
  labels[1, chexpert.INDEX["Edema"]] = 1
  labels[2, chexpert.INDEX["Pneumothorax"]] = 1
  labels[3, chexpert.INDEX["Support Devices"]] = 1                   # normal: devices only
  kinds = diagnose.pair_kinds(chexpert.apply_no_finding_rule(labels))
  pairs = {kind: sorted(zip(*np.nonzero(mask))) for kind, mask in kinds.items()}
  assert pairs["normal-normal"] == []
  assert pairs["normal-abnormal"] == [(0, 3), (1, 3), (2, 3)]
  assert pairs["abnormal-abnormal sharing a finding"] == [(0, 1)]
  assert pairs["abnormal-abnormal, no finding in common"] == [(0, 2), (1, 2)]
