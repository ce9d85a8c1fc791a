"""clipmed.predict and clipmed.export on one tiny trained workdir: the evaluation's numbers, every
image format, the CLI on a folder with a corrupt file, the export round trip in a fresh process,
and an export as initial weights."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from clipmed import errors, export, predict
from clipmed.predict import cli
from clipmed.evaluators import results as results_lib
from clipmed.evaluators import prompt_sets, zero_shot
from clipmed.evaluators.embedder import Embedder
from tests.conftest import ROOT
from tests.fakes import images as fake_images


def _run(args, env=None, timeout=600):
  env = dict(os.environ, **(env or {}))
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  env["JAX_PLATFORMS"] = "cpu"
  return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=timeout)


@pytest.fixture(scope="module")
def model(tiny_workdir):
  return predict.load(tiny_workdir)


@pytest.fixture(scope="module")
def test_split_files(tiny_workdir, model, tmp_path_factory):
  """The test split's prepared images written out as PNG files, with its metadata."""
  import input_pipeline  # pylint: disable=g-import-not-at-top
  from input_pipeline import pipeline  # pylint: disable=g-import-not-at-top
  from clipmed import checkpointing  # pylint: disable=g-import-not-at-top

  config = checkpointing.read_run_config(tiny_workdir)
  dataset = input_pipeline.open_dataset(config.data)
  raw = pipeline.without_image_decoding(dataset.source("test"))
  folder = tmp_path_factory.mktemp("test_split")
  files = []
  for i in range(len(raw)):
    path = folder / f"{i:03d}.png"
    path.write_bytes(raw[i]["image"])
    files.append(str(path))
  return config, dataset, files


def test_image_embeddings_equal_the_evaluation_pipelines(model, test_split_files):
  config, dataset, files = test_split_files
  from clipmed import batch as batch_lib  # pylint: disable=g-import-not-at-top
  spec = batch_lib.BatchSpec.from_config(config, num_classes=len(dataset.class_names))
  spec = dataclasses.replace(spec, text=False, negatives=False, graph=None)
  embed = Embedder(model.module, model.tokenizer, eval_batch_size=8,
                   max_text_length=config.data.max_text_length).bind(model.params)
  expected = []
  for batch in dataset.iterate_split("test", spec=spec, batch_size=8):
    expected.append(np.asarray(embed["embed_images"](batch["image"]))[batch["valid"]])
  expected = np.concatenate(expected)
  got = model.embed_images(files)
  assert got.shape == expected.shape == (24, 16)
  np.testing.assert_allclose(got, expected, atol=1e-6)


def test_zero_shot_reproduces_the_runs_zero_shot_auroc(tiny_workdir, model, test_split_files):
  """predict's zero-shot logits on the split's image files give results.json's AUROCs."""
  config, dataset, files = test_split_files
  classes = list(config.evals.zero_shot.classes)
  found, logits = model.zero_shot_logits(model.embed_images(files), classes)
  assert found == classes
  labels = dataset.split_metadata("test")["labels"]
  columns = [list(dataset.class_names).index(c) for c in classes]
  positive, counted = zero_shot.binary_targets(labels[:, columns])
  ours = zero_shot.auroc_metrics(positive, counted, logits, classes, num_bootstrap=2, seed=0)
  stored, _ = results_lib.read(os.path.join(tiny_workdir, "results.json"))
  compared = 0
  for metric, value in ours.items():
    reference = stored[f"zero_shot/synth_cxr/{metric}"].value
    if np.isnan(reference):
      assert np.isnan(value.value)
    else:
      assert value.value == pytest.approx(reference, abs=1e-9), metric
      compared += 1
  assert compared >= 5
  probs = model.zero_shot(files[:3], findings=["pleural effusion", "PNEUMOTHORAX"])
  assert list(probs) == ["Pleural Effusion", "Pneumothorax"]
  k = classes.index("Pleural Effusion")
  np.testing.assert_allclose(probs["Pleural Effusion"], 1 / (1 + np.exp(-logits[:3, k])),
                             rtol=1e-6)
  # A prior rate p adds log(p / (1 - p)) to the logit, as the evaluation's decision does.
  probs = model.zero_shot(files[:3], findings=["pleural effusion"],
                          priors={"Pleural effusion": 0.1})
  np.testing.assert_allclose(probs["Pleural Effusion"],
                             1 / (1 + np.exp(-(logits[:3, k] + np.log(0.1 / 0.9)))), rtol=1e-6)


def test_report_embeddings_and_retrieval(model, test_split_files):
  _, dataset, files = test_split_files
  reports = dataset.split_metadata("test")["reports"][:5]
  emb = model.embed_reports(reports)
  assert emb.shape == (5, 16)
  ids, mask = model.tokenize(reports)
  assert ids.shape == mask.shape == (5, 32) and ids[0, 0] == model.tokenizer.cls_token_id
  np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
  index, sims = model.retrieve(files[:2], reports, k=3)
  full = model.embed_images(files[:2]) @ emb.T
  np.testing.assert_array_equal(index, np.argsort(-full, axis=1, kind="stable")[:, :3])
  np.testing.assert_allclose(sims, np.sort(full, axis=1)[:, ::-1][:, :3], atol=1e-6)


def test_dicom_16bit_rgba_pil_and_arrays_decode_like_preparation(model, tmp_path):
  """Each format, rendered by dataset preparation's rules, equals the 8-bit PNG of the same
  picture: 16-bit min-max, RGBA luma, DICOM window and MONOCHROME1 inversion."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  picture = fake_images.chest_like(60, 50, seed=3)
  picture[0, 0], picture[-1, -1] = 0, 255  # full range, so min-max maps 16-bit back exactly
  png = fake_images.write_png(tmp_path / "a.png", picture)
  png16 = fake_images.write_png16(tmp_path / "a16.png", picture.astype(np.uint16) * 257)
  rgba = fake_images.write_rgba_png(tmp_path / "rgba.png", picture)
  # Window (128, 256) maps stored 0..255 linearly onto 0..1; MONOCHROME1 then inverts it.
  dcm = fake_images.write_dicom(tmp_path / "mono1.dcm", (255 - picture).astype(np.uint16),
                                bits_stored=16, photometric="MONOCHROME1", window=(128, 256))
  inputs = [png, png16, rgba, dcm, Image.open(png16), picture, np.stack([picture] * 3, -1)]
  emb = model.embed_images(inputs)
  for i in range(1, len(inputs)):
    np.testing.assert_allclose(emb[i], emb[0], atol=1e-6, err_msg=f"input {i}")
  not_inverted = model.embed_images([fake_images.write_png(tmp_path / "neg.png", 255 - picture)])
  assert np.abs(not_inverted[0] - emb[0]).max() > 1e-3  # the comparison above can fail
  with pytest.raises(errors.UserError, match="truncated"):
    model.embed_images([fake_images.write_truncated(tmp_path / "cut.png", png)])
  with pytest.raises(errors.UserError, match="float32"):
    model.embed_images([picture.astype(np.float32)])


@pytest.mark.slow
def test_calibrated_probabilities_average_to_the_priors(tiny_workdir, model, test_split_files,
                                                        tmp_path, capsys):
  """calibrate_on: the mean probability over the population's images equals each prior."""
  _, _, files = test_split_files
  findings = ["pleural effusion", "pneumothorax"]
  priors = {"Pleural Effusion": 0.2, "pneumothorax": 0.05}
  classes, logits = model.zero_shot_logits(model.embed_images(files), findings)
  probs = model.zero_shot(files[:3], findings=findings, priors=priors, calibrate_on=files)
  offset = prompt_sets.calibrated_offset(logits, np.log([0.2 / 0.8, 0.05 / 0.95]))
  for k, name in enumerate(classes):
    np.testing.assert_allclose(probs[name], 1 / (1 + np.exp(-(logits[:3, k] + offset[k]))),
                               rtol=1e-6)
  everyone = model.zero_shot(files, findings=findings, priors=priors, calibrate_on=files)
  np.testing.assert_allclose([everyone[c].mean() for c in classes], [0.2, 0.05], rtol=1e-6)
  with pytest.raises(errors.ConfigError, match=r"give a prior for \['Pneumothorax'\]"):
    model.zero_shot(files[:1], findings=findings, priors={"pleural effusion": 0.2},
                    calibrate_on=files)
  with pytest.raises(errors.ConfigError, match="no calibration images"):
    model.zero_shot(files[:1], findings=findings, priors=priors, calibrate_on=[])
  # The CLI: the same probabilities; an unreadable calibration file is reported and left out.
  population = tmp_path / "population"
  population.mkdir()
  for f in files:
    os.symlink(f, population / os.path.basename(f))
  (population / "zz_broken.png").write_bytes(b"not a png")
  out = tmp_path / "out.json"
  assert cli.main(["--model", tiny_workdir, "--images", *files[:3], "--findings",
                   ",".join(findings), "--priors", "pleural effusion=0.2,pneumothorax=0.05",
                   "--calibrate-on", str(population), "--output", str(out)]) == 0
  err = capsys.readouterr().err
  error_lines = [l for l in err.splitlines() if l.startswith("error:")]
  assert len(error_lines) == 1 and "zz_broken.png" in error_lines[0], err
  records = json.loads(out.read_text())
  for k, name in enumerate(classes):
    np.testing.assert_allclose([r["findings"][name] for r in records], probs[name], rtol=1e-6)
  with pytest.raises(SystemExit) as exit_info:
    cli.main(["--model", tiny_workdir, "--images", files[0], "--findings", ",".join(findings),
              "--priors", "pneumothorax=0.05", "--calibrate-on", str(population)])
  assert exit_info.value.code == 2
  err = capsys.readouterr().err
  assert "give a prior for ['Pleural Effusion']" in err and err.count("\n") == 1, err


def test_an_evaluations_offsets_reproduce_its_yes_no_decisions(tiny_workdir, model,
                                                               test_split_files, tmp_path,
                                                               capsys):
  """evaluation_offsets: the zero-shot probabilities above 1/2 are the evaluation's "yes" on the
  test split's image files, and the offsets are refused for another step or other prompts."""
  _, _, files = test_split_files
  offsets = predict.evaluation_offsets(tiny_workdir)
  examples = results_lib.read_examples(tiny_workdir)[("zero_shot", "synth_cxr")]
  assert offsets.classes == tuple(examples["classes"]) and offsets.step == model.step
  assert not np.allclose(offsets.offset, examples["prior_log_odds"])  # calibrated, the default
  probs = model.zero_shot(files, offsets=offsets)
  assert tuple(probs) == offsets.classes
  ours = np.stack([probs[c] for c in offsets.classes], axis=1)
  evaluated = examples["scores"] + examples["decision_offset"][None, :]
  np.testing.assert_allclose(ours, 1 / (1 + np.exp(-evaluated)), rtol=1e-5)
  np.testing.assert_array_equal(ours > 0.5, prompt_sets.says_yes(examples["scores"],
                                                                 examples["decision_offset"]))
  with pytest.raises(errors.ConfigError, match="fitted for the weights of step"):
    model.zero_shot(files[:1], offsets=dataclasses.replace(offsets, step=offsets.step + 1))
  with pytest.raises(errors.ConfigError, match="other prompt texts"):
    model.zero_shot(files[:1], findings=["edema"],
                    prompts={name: {"positive": ["Yes."], "negative": ["No."]}
                             for name in offsets.classes}, offsets=offsets)
  with pytest.raises(errors.ConfigError, match=r"no offset for \['No Finding'\]"):
    model.zero_shot(files[:1], findings=["no finding"], offsets=offsets)
  with pytest.raises(errors.ConfigError, match="not both"):
    model.zero_shot(files[:1], priors={"edema": 0.1}, offsets=offsets)
  with pytest.raises(errors.ConfigError, match="records no reusable yes/no decision"):
    predict.evaluation_offsets(tiny_workdir, name="retrieval")
  with pytest.raises(errors.FileError, match="evaluate it first"):
    predict.evaluation_offsets(str(tmp_path))
  # The CLI: the same probabilities for the evaluated findings.
  out = tmp_path / "offsets.json"
  assert cli.main(["--model", tiny_workdir, "--images", *files[:3], "--offsets-from",
                   tiny_workdir, "--output", str(out)]) == 0
  records = json.loads(out.read_text())
  for name in offsets.classes:
    np.testing.assert_allclose([r["findings"][name] for r in records], probs[name][:3],
                               rtol=1e-6)
  with pytest.raises(SystemExit) as exit_info:
    cli.main(["--model", tiny_workdir, "--images", files[0], "--offsets-from", tiny_workdir,
              "--priors", "edema=0.1"])
  assert exit_info.value.code == 2
  assert capsys.readouterr().err.strip().endswith("not both")


def test_cli_scores_a_folder_and_reports_the_corrupt_file(tiny_workdir, tmp_path):
  folder = tmp_path / "scans"
  picture = fake_images.chest_like(60, 50, seed=1)
  fake_images.write_png(folder / "a.png", picture)
  fake_images.write_dicom(folder / "nested" / "b.dcm", picture.astype(np.uint16) * 16,
                          bits_stored=12)
  fake_images.write_truncated(folder / "nested" / "broken.png", str(folder / "a.png"))
  (tmp_path / "reports.csv").write_text(
      "report\nNo acute findings.\nSmall left pleural effusion.\nRight pneumothorax.\n")
  out = tmp_path / "out.json"
  proc = _run(["-m", "clipmed.predict", "--model", tiny_workdir, "--images", str(folder),
               "--findings", "pleural effusion,pneumothorax", "--reports",
               str(tmp_path / "reports.csv"), "--top-k", "2", "--output", str(out)])
  assert proc.returncode == 0, proc.stderr[-3000:]
  errors_lines = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(errors_lines) == 1 and "broken.png" in errors_lines[0], proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr
  assert "scored 2 of 3 images" in proc.stderr
  records = {os.path.basename(r["file"]): r for r in json.loads(out.read_text())}
  assert sorted(records) == ["a.png", "b.dcm", "broken.png"]
  assert "truncated" in records["broken.png"]["error"] and not records["broken.png"]["findings"]
  for name in ("a.png", "b.dcm"):
    r = records[name]
    assert r["error"] is None
    assert set(r["findings"]) == {"Pleural Effusion", "Pneumothorax"}
    assert all(0.0 < p < 1.0 for p in r["findings"].values())
    assert [h["rank"] for h in r["reports"]] == [1, 2]
    assert r["reports"][0]["similarity"] >= r["reports"][1]["similarity"]


def test_cli_user_mistakes_are_one_line(tiny_workdir, tmp_path, capsys):
  with pytest.raises(SystemExit) as exit_info:
    cli.main(["--model", str(tmp_path / "missing"), "--images", str(tmp_path)])
  assert exit_info.value.code == 2
  assert capsys.readouterr().err.count("\n") == 1
  fake_images.write_png(tmp_path / "a.png", fake_images.chest_like(20, 20))
  with pytest.raises(SystemExit):
    cli.main(["--model", tiny_workdir, "--images", str(tmp_path / "a.png"),
                  "--findings", "broken heart"])
  assert "no prompts for finding 'broken heart'" in capsys.readouterr().err
  for priors, message in (("pneumothorax=1.5", "strictly between 0 and 1"),
                          ("pneumothorax", "is not FINDING=RATE"),
                          ("edema=0.1", "not among the scored findings")):
    with pytest.raises(SystemExit) as exit_info:
      cli.main(["--model", tiny_workdir, "--images", str(tmp_path / "a.png"),
                "--findings", "pneumothorax", "--priors", priors])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


@pytest.mark.slow
def test_export_loads_in_a_fresh_process_with_the_same_numbers(tiny_workdir, model, tmp_path):
  exported = tmp_path / "export"
  # The export is written, then the upload fails offline with one line, not a traceback.
  proc = _run(["-m", "clipmed.export", "--workdir", tiny_workdir, "--output", str(exported),
               "--push-to-hub", "someone/clipmed-tiny"], env={"HF_HUB_OFFLINE": "1"})
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert "could not upload" in proc.stderr and "Traceback" not in proc.stderr
  assert sorted(os.listdir(exported)) == ["README.md", "config.json", "decision_offsets",
                                          "model.safetensors", "preprocessing.json", "prompts",
                                          "results.json", "tokenizer", "training_config.json"]
  card = (exported / "README.md").read_text()
  assert "zero_shot/synth_cxr/mean_auroc" in card and "synth_cxr/test" in card
  # The evaluation's yes/no offsets travel with the export, without the test split's study ids.
  decisions = {name: sorted(os.listdir(exported / "decision_offsets" / name))
               for name in os.listdir(exported / "decision_offsets")}
  assert decisions["zero_shot"] == ["synth_cxr.npz"] and "retrieval" not in decisions
  assert "`decision_offsets/zero_shot/synth_cxr.npz`" in card
  with np.load(exported / "decision_offsets" / "zero_shot" / "synth_cxr.npz") as npz:
    assert sorted(npz.files) == ["classes", "decision_offset", "prompt_sha256", "step"]
  offsets = predict.evaluation_offsets(tiny_workdir)
  picture = fake_images.chest_like(70, 60, seed=5)
  image = fake_images.write_png(tmp_path / "x.png", picture)
  texts = ["Small left pleural effusion.", "No acute cardiopulmonary process."]
  # A fresh process that never saw the workdir; predict needs no TensorFlow, before or after use.
  code = (f"import sys, numpy as np, clipmed.predict as p\n"
          f"assert 'tensorflow' not in sys.modules, 'importing clipmed.predict loaded tensorflow'\n"
          f"m = p.load({str(exported)!r})\n"
          f"np.savez({str(tmp_path / 'fresh.npz')!r}, image=m.embed_images([{image!r}]), "
          f"text=m.embed_reports({texts!r}), scale=m.logit_scale, "
          f"zs=m.zero_shot([{image!r}])['Pleural Effusion'], "
          f"decided=np.stack(list(m.zero_shot([{image!r}], "
          f"offsets=p.evaluation_offsets({str(exported)!r})).values())))\n"
          f"assert 'tensorflow' not in sys.modules, 'using clipmed.predict loaded tensorflow'\n")
  proc = _run(["-c", code])
  assert proc.returncode == 0, proc.stderr[-3000:]
  fresh = np.load(tmp_path / "fresh.npz")
  np.testing.assert_allclose(fresh["image"], model.embed_images([image]), atol=1e-6)
  np.testing.assert_allclose(fresh["text"], model.embed_reports(texts), atol=1e-6)
  assert float(fresh["scale"]) == pytest.approx(model.logit_scale, abs=1e-6)
  np.testing.assert_allclose(fresh["zs"], model.zero_shot([image])["Pleural Effusion"],
                             atol=1e-6)
  np.testing.assert_allclose(
      fresh["decided"], np.stack(list(model.zero_shot([image], offsets=offsets).values())),
      atol=1e-6)
  with pytest.raises(errors.FileError, match="not an empty directory"):
    export.export(tiny_workdir, str(exported))


@pytest.mark.slow
def test_export_is_initial_weights_for_training(tiny_workdir, tiny_data_dir, model, tmp_path):
  import jax  # pylint: disable=g-import-not-at-top
  from clipmed import train  # pylint: disable=g-import-not-at-top
  from configs import tiny  # pylint: disable=g-import-not-at-top
  exported = export.export(tiny_workdir, str(tmp_path / "export"))
  config = tiny.get_config(f"data_dir={tiny_data_dir},evals=none")
  config.model.init = exported
  config.data.tokenizer = os.path.join(exported, "tokenizer")
  s = train.setup(config)
  started = jax.tree_util.tree_leaves_with_path(s.state.params)
  trained = dict(jax.tree_util.tree_leaves_with_path(model.params))
  assert len(started) == len(trained) > 10
  for path, value in started:
    np.testing.assert_array_equal(np.asarray(value), np.asarray(trained[path]))
  config.model.init = str(tmp_path)
  with pytest.raises(errors.FileError, match="is not a clipmed export"):
    train.setup(config)


def test_load_rejects_what_is_not_a_model(tmp_path):
  with pytest.raises(errors.FileError, match="does not exist"):
    predict.load(str(tmp_path / "nowhere"))
  with pytest.raises(errors.UserError, match="no config.json"):
    predict.load(str(tmp_path))


def test_a_run_without_config_json_loads_with_its_training_config(tiny_workdir, tiny_data_dir,
                                                                  model, tmp_path):
  """Workdirs trained before runs saved config.json: the config file is passed instead."""
  import shutil  # pylint: disable=g-import-not-at-top
  old = tmp_path / "old_run"
  shutil.copytree(tiny_workdir, old, ignore=shutil.ignore_patterns("config.json"))
  with pytest.raises(errors.ConfigError, match="pass the config it was trained with"):
    predict.load(str(old))
  again = predict.load(str(old), config=f"configs/tiny.py:data_dir={tiny_data_dir}")
  assert again.step == model.step == 6
  texts = ["Small left pleural effusion."]
  np.testing.assert_array_equal(again.embed_reports(texts), model.embed_reports(texts))
