"""Export a trained model: python -m clipmed.export --workdir=DIR --output=EXPORT_DIR

Writes a self-contained model directory (layout: clipmed/models/saved.py) that
`clipmed.predict.load(EXPORT_DIR)` reads without the workdir or the training config, and that
`--config.model.init=EXPORT_DIR --config.data.tokenizer=EXPORT_DIR/tokenizer` trains further from.
Options: --step N (default: the latest checkpoint), --config configs/x.py[:arg] for a workdir
without config.json, --push-to-hub ORG/NAME [--private] to upload the directory to the Hugging
Face Hub afterwards (needs `pip install huggingface_hub` and `hf auth login`).
"""

import argparse
import glob
import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np

from clipmed import errors
from clipmed import predict
from clipmed.evaluators import results as results_lib
from clipmed.models import saved


def export(workdir: str, output: str, *, step: int | None = None, config: Any = None) -> str:
  """Writes the export of `workdir`'s checkpoint to `output` (a new or empty directory).

  Args:
    workdir: a training workdir.
    output: the export directory to create.
    step: the checkpoint step; default the latest complete one.
    config: the training config for a workdir without config.json (see predict.restore_workdir).

  Returns:
    The absolute export directory.

  Raises:
    clipmed.errors.UserError: the output is not empty, or the workdir cannot be read.
  """
  import jax  # pylint: disable=g-import-not-at-top

  workdir, output = os.path.abspath(workdir), os.path.abspath(output)
  if os.path.exists(output) and (not os.path.isdir(output) or os.listdir(output)):
    raise errors.FileError(f"--output {output} exists and is not an empty directory; choose a new "
                           "directory (an export is never written over another)")
  config, _, params, tokenizer, step = predict.restore_workdir(workdir, step, config)
  parent = os.path.dirname(output)
  try:
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".clipmed-export-", dir=parent)
  except OSError as e:
    raise errors.NotWritableError(f"cannot write --output {output}: {e.strerror or e}") from None
  try:
    saved.write_params(os.path.join(staging, saved.WEIGHTS), jax.device_get(params))
    model_config = config.model.to_dict()
    model_config["text"]["vocab_size"] = len(tokenizer)
    # Paths on the training machine mean nothing to the export's users; its own weights hold them.
    model_config["init"], model_config["image"]["init"], model_config["text"]["init"] = "", "", ""
    default_prompts, default_findings = predict._default_zero_shot(config)  # pylint: disable=protected-access
    _write_json(os.path.join(staging, saved.CONFIG), {
        "format": saved.FORMAT, "format_version": saved.FORMAT_VERSION, "step": int(step),
        "model": model_config, "default_prompts": default_prompts,
        "default_findings": default_findings})
    preprocessing = predict.Preprocessing.from_config(config)
    _write_json(os.path.join(staging, saved.PREPROCESSING), preprocessing.to_dict())
    shutil.copytree(os.path.join(workdir, "tokenizer"), os.path.join(staging, saved.TOKENIZER))
    os.makedirs(os.path.join(staging, saved.PROMPTS))
    for name, path in predict.run_prompt_files(config).items():
      if os.path.isfile(path):  # a custom prompt file is kept under its file name
        target = os.path.basename(name).removesuffix(".json") + ".json"
        shutil.copyfile(path, os.path.join(staging, saved.PROMPTS, target))
    with open(os.path.join(staging, saved.TRAINING_CONFIG), "w", encoding="utf-8") as f:
      f.write(config.to_json_best_effort(indent=1, sort_keys=True) + "\n")
    results_path = os.path.join(workdir, "results.json")
    results = None
    if os.path.isfile(results_path):
      shutil.copyfile(results_path, os.path.join(staging, saved.RESULTS))
      results = results_lib.read(results_path)
    decisions = _copy_decision_offsets(workdir, int(step), os.path.join(staging, saved.DECISIONS))
    num_params = sum(int(np.prod(np.shape(x))) for x in jax.tree.leaves(params))
    with open(os.path.join(staging, saved.CARD), "w", encoding="utf-8") as f:
      f.write(model_card(config, step=int(step), preprocessing=preprocessing, results=results,
                         num_params=num_params, default_prompts=default_prompts,
                         decisions=decisions))
    if os.path.isdir(output):
      os.rmdir(output)
    os.replace(staging, output)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return output


def _copy_decision_offsets(workdir: str, step: int, target: str) -> list[str]:
  """Writes the yes/no offsets of every evaluation the workdir saved for `step` to
  target/<eval>/<dataset>.npz (the offsets alone: the saved examples also hold the test split's
  study ids, which stay in the workdir); returns the "<eval>/<dataset>" names written."""
  written = []
  for path in sorted(glob.glob(os.path.join(workdir, results_lib.EXAMPLES_DIR, "*", "*.npz"))):
    try:
      offsets = predict.evaluation_offsets(path)
    except errors.UserError:  # a task without a yes/no decision, or an unreadable file
      continue
    if offsets.step == step:
      name = os.path.relpath(path, os.path.dirname(os.path.dirname(path)))  # <eval>/<dataset>.npz
      offsets.save(os.path.join(target, name))
      written.append(name[:-4])
  return written


def _write_json(path: str, payload: Any) -> None:
  with open(path, "w", encoding="utf-8") as f:
    json.dump(payload, f, indent=1, sort_keys=True)
    f.write("\n")


def model_card(config: Any, *, step: int, preprocessing: "predict.Preprocessing",
               results: tuple[dict, dict] | None, num_params: int, default_prompts: str,
               decisions: Sequence[str] = ()) -> str:
  """The export's README.md: what the model is, how to use it, its training and its results
  (`decisions`: the "<eval>/<dataset>" yes/no offsets the export carries)."""
  data, loss = config.data, config.loss
  streams = [f"{k} (threshold {loss.thresholds[k]}, weight {loss.weights[k]})"
             for k in ("text", "clinical", "graph") if float(loss.weights[k]) > 0]
  lines = [
      "---", "library_name: clipmed", "tags: [chest-x-ray, clip, vision-language, jax, flax]",
      "---", "", f"# clipmed model: {data.name}, step {step}", "",
      "A CLIP dual encoder (Swin image encoder, BERT text encoder) for chest X-rays and their "
      "reports, trained with clipmed, an implementation of Ko & Park, \"Bringing CLIP to the "
      "Clinic\" (CVPR 2025). For research; not a medical device and not for diagnosis.", "",
      "## Use", "", "```python", "import clipmed.predict",
      "model = clipmed.predict.load(\"THIS_DIRECTORY\")",
      "probs = model.zero_shot([\"image.dcm\"], findings=[\"pleural effusion\"])",
      "emb = model.embed_images([\"image.png\"])   # [N, D], L2-normalised", "```", "",
      "`python -m clipmed.predict --model THIS_DIRECTORY --images scans/ --output out.csv` "
      "scores a folder. Further training from these weights: `--config.model.init=THIS_DIRECTORY "
      "--config.data.tokenizer=THIS_DIRECTORY/tokenizer`.", "",
      "## Training", "",
      f"- data: `{data.name}` (views: {data.views}; text field: {data.text_field}"
      + (f"; mixture: {[m['name'] for m in data.mixture]}" if data.mixture else "") + ")",
      f"- steps: {step} of {config.num_train_steps}, global batch size {config.batch_size}, "
      f"learning rate {config.optimizer.learning_rate}, seed {config.seed}",
      f"- loss: {loss.loss_type}, soft labels {loss.soft_labels}, streams "
      f"{', '.join(streams) or 'none'}, hard negatives {bool(loss.hard_negatives)}, report graph "
      f"encoder {bool(config.model.graph.enabled)}",
      f"- model: embed_dim {config.model.embed_dim}, image encoder depths "
      f"{tuple(config.model.image.depths)}, text encoder {config.model.text.num_layers} layers, "
      f"{num_params / 1e6:.2f}M parameters",
      f"- the full training config: `{saved.TRAINING_CONFIG}`", "",
      "## Preprocessing", "",
      f"An image file is decoded as clipmed's dataset preparation does (DICOM windowing, "
      f"MONOCHROME1 inverted, 16-bit PNG min-max), its longest side resized to "
      f"{preprocessing.source_max_size}, then its square canvas to {preprocessing.image_size} px, "
      f"scaled to [0, 1] and normalised with mean {preprocessing.mean} and std "
      f"{preprocessing.std} ({preprocessing.channels} channel(s)); reports are cut at "
      f"{preprocessing.max_text_length} tokens (`{saved.PREPROCESSING}`). Zero-shot prompts: "
      f"`{saved.PROMPTS}/{default_prompts}.json` by default.", ""]
  if decisions:
    lines += [
        "## Yes/no decisions", "",
        "The offsets that the evaluation added to each finding's logit before its yes/no "
        f"decision ({', '.join(f'`{saved.DECISIONS}/{d}.npz`' for d in decisions)}). "
        "`model.zero_shot(files, offsets=clipmed.predict.evaluation_offsets(\"THIS_DIRECTORY\"))` "
        "or `--offsets-from THIS_DIRECTORY` gives the probabilities whose 1/2 threshold is the "
        "evaluation's decision (with the evaluation's prompts).", ""]
  lines += ["## Evaluation", ""]
  if results is None:
    lines += ["The workdir had no results.json: this checkpoint was not evaluated.", ""]
  else:
    metrics, data_info = results
    lines += ["From the run's results.json (copied here), with seeded 95% bootstrap intervals.", "",
              "| metric | value | 95% CI |", "|---|---:|---|"]
    for key, m in metrics.items():
      no_interval = key.split("/")[-1].startswith("chance") or math.isnan(m.ci_low)
      ci = "-" if no_interval else f"[{results_lib.fmt(m.ci_low)}, {results_lib.fmt(m.ci_high)}]"
      lines.append(f"| {key} | {results_lib.fmt(m.value)} | {ci} |")
    if data_info:
      lines += ["", "Evaluated splits:", ""]
      lines += [f"- {split}: {json.dumps(info, sort_keys=True)}"
                for split, info in sorted(data_info.items())]
    lines.append("")
  return "\n".join(lines)


def push_to_hub(export_dir: str, repo_id: str, *, private: bool = False) -> str:
  """Uploads an export directory to the Hugging Face Hub; returns the repository URL.

  Raises:
    clipmed.errors.UserError: huggingface_hub is missing, or the upload failed (network, login,
      permissions); the message says which and that the local export is complete.
  """
  try:
    from huggingface_hub import HfApi  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise errors.UserError(f"--push-to-hub needs huggingface_hub: `pip install huggingface_hub`, "
                           f"then rerun (the export in {export_dir} is complete)") from None
  try:
    api = HfApi()
    url = api.create_repo(repo_id, exist_ok=True, private=private)
    api.upload_folder(folder_path=export_dir, repo_id=repo_id,
                      commit_message="Upload a clipmed export")
  except Exception as e:  # pylint: disable=broad-except  # network, auth, quota: many types
    raise errors.UserError(
        f"could not upload {export_dir} to the Hugging Face Hub as {repo_id} "
        f"({type(e).__name__}: {' '.join(str(e).split())[:300]}); check the network and "
        "`hf auth login`, then upload the complete export with `hf upload "
        f"{repo_id} {export_dir}`") from None
  return str(url)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m clipmed.export",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True, help="the training workdir")
  parser.add_argument("--output", required=True, help="the export directory to create")
  parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
  parser.add_argument("--config", default=None,
                      help="training config (configs/x.py[:arg]) of a workdir without config.json")
  parser.add_argument("--push-to-hub", default=None, metavar="ORG/NAME",
                      help="upload the export to this Hugging Face Hub repository")
  parser.add_argument("--private", action="store_true", help="create the Hub repository private")
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  from clipmed import console  # pylint: disable=g-import-not-at-top
  with console.user_errors_exit():
    output = export(args.workdir, args.output, step=args.step, config=args.config)
    print(f"exported to {output}", flush=True)
    if args.push_to_hub:
      print(f"uploaded to {push_to_hub(output, args.push_to_hub, private=args.private)}",
            flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
