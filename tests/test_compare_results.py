"""Saved per-example scores and scripts/compare_results.py on small real results.

A tiny evaluation (the runner with deterministic embedding functions) writes results.json and
examples/*.npz into workdirs; the tests read those files back.
"""

import importlib.util
import json
import os

import ml_collections
import numpy as np
import pytest

from clipmed.evaluators import EVALUATORS, EvalSource, Runner, metrics
from clipmed.evaluators import results as results_lib
from clipmed.report import chexpert

N, D = 40, 16
CLASSES = ["Cardiomegaly", "Edema", "Pleural Effusion", "Pneumothorax"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location(
    "compare_results", os.path.join(ROOT, "scripts", "compare_results.py"))
compare_results = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare_results)


def _text_vector(text):
  rng = np.random.default_rng([ord(c) for c in text])
  return rng.normal(size=D).astype(np.float32)


def _metadata(ids):
  rng = np.random.default_rng(0)
  labels = np.full((N, 14), np.nan, np.float32)
  for name in CLASSES:
    labels[:, chexpert.INDEX[name]] = np.where(rng.random(N) < 0.35, 1.0, 0.0)
  labels = chexpert.apply_no_finding_rule(labels)
  reports = [f"report {i % 25}" for i in range(N)]
  return dict(reports=reports, labels=labels, study_ids=ids, extras={})


def _evals():
  common = dict(dataset="", split="test", every_steps=0, num_bootstrap=100)
  return ml_collections.ConfigDict(dict(
      zero_shot=dict(task="zero_shot", prompts="chexpert", classes=CLASSES, where={}, **common),
      zero_shot_multiclass=dict(task="zero_shot_multiclass", prompts="chexpert", classes=CLASSES,
                                **common),
      adversarial=dict(task="adversarial", prompts="chexpert", classes=CLASSES, **common),
      retrieval=dict(task="retrieval", ks=(1, 5), **common),
      normal_detection=dict(task="normal_detection", num_abnormal=10, **common),
  ))


def _evaluate(workdir, model_seed, ids=None):
  """Evaluates a 'model' whose image embeddings are seeded noise; writes the workdir's files."""
  ids = ids or [f"s{i:03d}" for i in range(N)]
  images = np.random.default_rng(model_seed).normal(size=(N, 1, 1, D)).astype(np.float32)

  def iterate(split):
    del split
    yield {"image": images, "valid": np.ones(N, bool)}

  runner = Runner(_evals(), default_dataset="toy", seed=0,
                  sources=lambda name: EvalSource(iterate_split=iterate,
                                                  split_metadata=lambda split: _metadata(ids)))
  results = runner.run(5, embed_images=lambda x: x.reshape(x.shape[0], -1),
                       embed_texts=lambda t: np.stack([_text_vector(x) for x in t]),
                       logit_scale=10.0)
  runner.write(str(workdir), results, 5)
  return results


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("runs")
  dirs = {}
  for name, seed in (("a", 0), ("b", 1), ("b2", 2)):
    dirs[name] = root / name
    _evaluate(dirs[name], seed)
  dirs["other_ids"] = root / "other_ids"
  _evaluate(dirs["other_ids"], 0, ids=[f"t{i:03d}" for i in range(N)])
  return dirs


def test_saved_examples_reproduce_results_json(runs):
  written, _ = results_lib.read(os.path.join(runs["a"], "results.json"))
  saved = results_lib.read_examples(str(runs["a"]))
  assert set(saved) == {(name, "toy") for name in _evals()}
  for (name, dataset), ex in saved.items():
    assert ex["study_ids"].tolist() == [f"s{i:03d}" for i in range(N)]
    assert ex["labels"].shape[0] == N and int(ex["step"]) == 5
    recomputed = metrics.bootstrap(EVALUATORS[str(ex["task"])].statistics(ex), N,
                                   num_resamples=100, seed=int(ex["eval_seed"]))
    for metric, m in recomputed.items():
      w = written[f"{name}/{dataset}/{metric}"]
      np.testing.assert_equal([m.value, m.ci_low, m.ci_high], [w.value, w.ci_low, w.ci_high],
                              err_msg=metric)


def test_a_new_evaluation_replaces_old_example_files(runs, tmp_path):
  workdir = tmp_path / "w"
  _evaluate(workdir, 0)
  stale = workdir / "examples" / "gone" / "toy.npz"
  stale.parent.mkdir()
  np.savez_compressed(stale, x=np.zeros(1))
  _evaluate(workdir, 0)
  assert not stale.exists()
  assert (workdir / "examples" / "zero_shot" / "toy.npz").exists()


def test_paired_differences_match_the_point_values(runs):
  a = compare_results.Row("A", [str(runs["a"])])
  b = compare_results.Row("B", [str(runs["b"])])
  diffs = compare_results.paired_differences(a, b)
  for key in ("zero_shot/toy/mean_auroc", "zero_shot/toy/within_image",
              "adversarial/toy/accuracy", "retrieval/toy/recall@5",
              "normal_detection/toy/accuracy", "zero_shot_multiclass/toy/accuracy"):
    expected = b.results[0][key].value - a.results[0][key].value
    assert diffs[key].value == pytest.approx(expected), key
    assert diffs[key].ci_low <= diffs[key].value <= diffs[key].ci_high
  # A run against itself: every resample gives exactly zero.
  same = compare_results.paired_differences(a, a)
  m = same["zero_shot/toy/mean_auroc"]
  assert (m.value, m.ci_low, m.ci_high) == (0.0, 0.0, 0.0)


def test_seeds_give_mean_and_spread_and_their_mean_difference(runs):
  a = compare_results.Row("A", [str(runs["a"])])
  b = compare_results.Row("B", [str(runs["b"]), str(runs["b2"])])
  key = "zero_shot/toy/mean_auroc"
  values = b.values(key)
  assert compare_results.cell(b, key) == (f"{np.mean(values):.3f} +- "
                                          f"{np.std(values, ddof=1):.3f} (2 seeds)")
  diff = compare_results.paired_differences(a, b)[key]
  assert diff.value == pytest.approx(np.mean(values) - a.values(key)[0])


def test_cli_prints_tables_and_plots(runs, tmp_path, capsys):
  out_png = tmp_path / "plots" / "cmp.png"
  code = compare_results.main([f"A={runs['a']}", f"B={runs['b']},{runs['b2']}", "--dataset=toy",
                               "--plot", str(out_png)])
  assert code == 0
  text = capsys.readouterr().out
  assert "| zero_shot/toy/within_image |" in text
  assert "Paired differences, row - A" in text and "| B - A |" in text
  with open(out_png, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  from matplotlib import image as mpimg  # pylint: disable=g-import-not-at-top
  assert mpimg.imread(str(out_png)).shape[0] > 100


def test_decision_rates_are_the_seed_means_and_plot(runs, tmp_path, capsys):
  a = compare_results.Row("A", [str(runs["a"])])
  b = compare_results.Row("B", [str(runs["b"]), str(runs["b2"])])
  table = dict((slug, (p, r)) for slug, p, r in compare_results.decision_rates(b, "toy"))
  assert sorted(table) == ["cardiomegaly", "edema", "pleural_effusion", "pneumothorax"]
  for slug, (prevalence, rate) in table.items():
    assert rate == pytest.approx(np.mean(b.values(f"zero_shot/toy/positive_rate/{slug}")))
    assert prevalence == pytest.approx(a.values(f"zero_shot/toy/prevalence/{slug}")[0])
  with pytest.raises(compare_results.UserError, match="no zero_shot/other/positive_rate"):
    compare_results.decision_rates(a, "other")
  out_png = tmp_path / "rates.png"
  assert compare_results.main([f"A={runs['a']}", f"B={runs['b']},{runs['b2']}", "--dataset=toy",
                               "--no-paired", "--rates-plot", str(out_png)]) == 0
  assert "decision rates plot written" in capsys.readouterr().out
  from matplotlib import image as mpimg  # pylint: disable=g-import-not-at-top
  assert mpimg.imread(str(out_png)).shape[1] > 2 * mpimg.imread(str(out_png)).shape[0] * 0.9
  assert compare_results.main([f"A={runs['a']}", "--dataset=other", "--rates-plot",
                               str(out_png)]) == 2
  assert "check --dataset" in capsys.readouterr().err


def test_cli_refuses_different_examples(runs, capsys):
  code = compare_results.main([f"A={runs['a']}", f"B={runs['other_ids']}", "--dataset=toy"])
  assert code == 2
  err = capsys.readouterr().err
  assert "different examples" in err and "same test images" in err


def test_cli_names_a_missing_results_file(tmp_path, capsys):
  assert compare_results.main([f"A={tmp_path / 'nothing'}"]) == 2
  assert "results.json does not exist" in capsys.readouterr().err


def test_results_without_examples_ask_for_a_reevaluation(runs, tmp_path, capsys):
  old = tmp_path / "old"
  old.mkdir()
  (old / "results.json").write_text((runs["a"] / "results.json").read_text())
  assert compare_results.main([f"A={runs['a']}", f"OLD={old}", "--dataset=toy"]) == 2
  assert "python -m clipmed.evaluate" in capsys.readouterr().err
  assert compare_results.main([f"A={runs['a']}", f"OLD={old}", "--dataset=toy",
                               "--no-paired"]) == 0
  json.loads((old / "results.json").read_text())


def test_runs_dir_takes_rows_and_seeds_from_the_layout(runs, tmp_path, capsys):
  layout = tmp_path / "table"
  (layout / "full").mkdir(parents=True)
  (layout / "clip").symlink_to(runs["a"])
  (layout / "full" / "seed0").symlink_to(runs["b"])
  (layout / "full" / "seed1").symlink_to(runs["b2"])
  specs = compare_results.rows_from_dir(str(layout))
  assert specs == [f"clip={layout / 'clip'}",
                   f"full={layout / 'full' / 'seed0'},{layout / 'full' / 'seed1'}"]
  assert compare_results.main(["--runs-dir", str(layout), "--baseline", "clip",
                               "--dataset=toy"]) == 0
  assert "(2 seeds)" in capsys.readouterr().out
  rows = compare_results.parse_rows([f"full={layout / 'full'}/seed*"])
  assert len(rows[0].workdirs) == 2


def test_examples_in_another_order_are_aligned_by_id(runs, tmp_path):
  shuffled = tmp_path / "shuffled"
  shuffled.mkdir()
  (shuffled / "results.json").write_text((runs["b"] / "results.json").read_text())
  order = np.random.default_rng(3).permutation(N)
  for (name, dataset), ex in results_lib.read_examples(str(runs["b"])).items():
    path = results_lib.examples_path(str(shuffled), name, dataset)
    os.makedirs(os.path.dirname(path))
    np.savez_compressed(path, **{k: v[order] if v.ndim and v.shape[0] == N and
                                 k not in ("classes", "ks", "fractions") else v
                                 for k, v in ex.items()})
  a = compare_results.Row("A", [str(runs["a"])])
  direct = compare_results.paired_differences(a, compare_results.Row("B", [str(runs["b"])]))
  aligned = compare_results.paired_differences(a, compare_results.Row("B", [str(shuffled)]))
  for key in ("zero_shot/toy/within_image", "adversarial/toy/shuffled_accuracy",
              "retrieval/toy/recall@1"):
    assert aligned[key] == direct[key], key
