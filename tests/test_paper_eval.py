"""The paper's evaluation across datasets, end to end on fake copies of the official downloads
(and the end-to-end test of training on a prepared real dataset):
train configs/tiny.py on a prepared fake MIMIC-CXR, then evaluate with configs/paper_eval.py on
every benchmark that is prepared; the others are skipped with the command that prepares them."""

import json
import os
import subprocess
import sys

import pytest

from clipmed.evaluators import results as results_lib
from input_pipeline import prepare as prepare_lib
from tests.conftest import ROOT
from tests.fakes import chexpert, cxr14, mimic_cxr, openi, rsna_pneumonia, siim_pneumothorax
from tests.fakes import vindr_cxr

# Every benchmark of the paper's tables but CheXpert Plus, which is left unprepared on purpose.
FAKES = {"mimic_cxr": mimic_cxr, "openi": openi, "chexpert": chexpert,
         "rsna_pneumonia": rsna_pneumonia, "siim_pneumothorax": siim_pneumothorax,
         "cxr14": cxr14, "vindr_cxr": vindr_cxr}
PREPARED = ["--config.data.prepared.image_size=64", "--config.data.prepared.vocab_size=200",
            "--config.data.max_text_length=32"]


@pytest.mark.slow
def test_paper_eval_on_prepared_fakes(tmp_path):
  data_dir = str(tmp_path / "tfds")
  hashes = {}
  for name, fake in FAKES.items():
    summary = prepare_lib.prepare(
        name, manual_dir=fake.write(str(tmp_path / "downloads" / name)), data_dir=data_dir,
        options={}, image_size=64, vocab_size=200, max_reject_fraction=0.7, progress=False)
    with open(os.path.join(summary["data_dir"], "metadata.json")) as f:
      hashes[name] = {split: info["image_id_sha256"]
                      for split, info in json.load(f)["splits"].items()}
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  workdir = str(tmp_path / "run")
  train = subprocess.run(
      [sys.executable, "-m", "clipmed.main",
       f"--config=configs/tiny.py:data_dir={data_dir},dataset=mimic_cxr,steps=3,batch=2,"
       "evals=none", *PREPARED, f"--workdir={workdir}"],
      capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
  assert train.returncode == 0, train.stderr[-4000:]
  evaluate = subprocess.run(
      [sys.executable, "-m", "clipmed.evaluate",
       f"--config=configs/paper_eval.py:base=tiny,data_dir={data_dir},dataset=mimic_cxr,"
       "num_bootstrap=20", *PREPARED, f"--workdir={workdir}"],
      capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
  assert evaluate.returncode == 0, evaluate.stderr[-4000:]

  # Not prepared here: one line, naming the command that prepares it.
  for name in ("chexpert_plus",):
    lines = [line for line in evaluate.stderr.splitlines()
             if line.startswith(f"warning: skipping the evaluations on {name}:")]
    assert len(lines) == 1 and f"python -m input_pipeline.prepare --dataset={name}" in lines[0]
  metrics, data = results_lib.read(os.path.join(workdir, "results.json"))
  for key in ("zs_rsna/rsna_pneumonia/auroc/pneumonia", "zs_rsna_ab/rsna_pneumonia/auroc/pneumonia",
              "zs_siim/siim_pneumothorax/auroc/pneumothorax", "zs_cxr14/cxr14/accuracy",
              "zs_vindr/vindr_cxr/accuracy", "ft_rsna/rsna_pneumonia/100pct/mean_auroc",
              "retrieval_mimic_cxr/mimic_cxr/recall@1", "cxr_align_mimic_cxr/mimic_cxr/task_a",
              "adversarial_cxr14/cxr14/accuracy", "zs_chexpert5x200/chexpert/accuracy",
              "ft_chexpert/chexpert/100pct/mean_auroc", "retrieval_openi/openi/recall@1",
              "normal_openi/openi/accuracy"):
    assert key in metrics, key
  assert not any(key.split("/")[1] == "chexpert_plus" for key in metrics)
  # clipmed.evaluate saves the per-example scores of every evaluation next to results.json.
  saved = results_lib.read_examples(workdir)
  assert ("adversarial_cxr14", "cxr14") in saved and ("zs_rsna", "rsna_pneumonia") in saved
  assert (len(saved[("zs_rsna", "rsna_pneumonia")]["study_ids"])
          == data["rsna_pneumonia/test"]["images"])
  # The evaluated splits are named by the hashes the builders stored: same images, same hash.
  assert data["rsna_pneumonia/test"]["image_id_sha256"] == hashes["rsna_pneumonia"]["test"]
  assert data["mimic_cxr/test"]["image_id_sha256"] == hashes["mimic_cxr"]["test"]
  # The tables, laid out like the paper's, are printed and in results.md.
  assert "### Table 2: zero-shot classification" in evaluate.stdout
  assert "### Table 5: adversarial prediction (ChestX-ray14)" in evaluate.stdout
  print(evaluate.stdout[evaluate.stdout.index("## The paper's tables"):])
  compare = subprocess.run([sys.executable, "scripts/compare_results.py", "--paper",
                            f"tiny={workdir}"], capture_output=True, text=True, env=env,
                           cwd=ROOT, timeout=300)
  assert compare.returncode == 0 and "| tiny |" in compare.stdout
