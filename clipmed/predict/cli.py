"""The command line of clipmed.predict (`python -m clipmed.predict --help`).

    python -m clipmed.predict --model DIR --images a.png b.dcm scans/ \\
        [--findings "pleural effusion,pneumothorax"] [--priors "pneumothorax=0.05,..."] \\
        [--calibrate-on population/ | --offsets-from WORKDIR_OR_EXPORT] \\
        [--reports reports.csv --top-k 5] \\
        [--output out.csv|out.json]

One record per image file; an unreadable file gets one `error:` line on stderr and an `error`
field, and the other files are still scored (exit status 0; 1 when no file could be read).
"""

import argparse
import csv
import functools
import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from clipmed import errors
from clipmed.predict import DEFAULT_BATCH_SIZE, Model, load, top_k
from clipmed.predict.decision import (DecisionOffsets, decision_offset, evaluation_offsets,
                                      probabilities)

# Files `--images DIR` picks up; files without a suffix are included too (DICOMs often have none).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".tif", ".tiff", ".bmp")


def find_images(paths: Iterable[str], flag: str = "--images") -> list[str]:
  """Files given, and under each directory given (recursively) the image files, sorted.

  Raises:
    FileError: a path that does not exist.
  """
  out = []
  for path in paths:
    if os.path.isdir(path):
      found = []
      for root, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [os.path.join(root, f) for f in files if not f.startswith(".") and (
            os.path.splitext(f)[1].lower() in IMAGE_SUFFIXES or not os.path.splitext(f)[1])]
      out += sorted(found)
    elif os.path.exists(path):
      out.append(path)
    else:
      raise errors.FileError(f"{flag} {path}: no such file or directory")
  return out


def read_reports(path: str) -> list[str]:
  """Report texts of a CSV file: its "report" (or "text") column, or its only column."""
  try:
    with open(path, encoding="utf-8", newline="") as f:
      rows = list(csv.DictReader(f))
  except FileNotFoundError:
    raise errors.FileError(f"--reports {path}: no such file") from None
  except (UnicodeDecodeError, csv.Error) as e:
    raise errors.DataError(f"--reports {path} is not a UTF-8 CSV file ({e})") from None
  columns = list(rows[0]) if rows else []
  column = next((c for c in ("report", "text") if c in columns), None)
  if column is None and len(columns) == 1:
    column = columns[0]
  if column is None or not rows:
    raise errors.DataError(f"--reports {path} needs a header row with a \"report\" column and at "
                           f"least one report (columns found: {columns})")
  return [row[column] or "" for row in rows]


def parse_priors(text: str) -> dict[str, float]:
  """"pleural effusion=0.14,pneumothorax=0.05" -> {finding: rate}; rates are checked by
  clipmed.predict.prior_offset."""
  out = {}
  for item in (t for t in text.split(",") if t.strip()):
    name, sep, rate = item.rpartition("=")
    if not sep or not name.strip():
      raise errors.ConfigError(f"--priors: {item.strip()!r} is not FINDING=RATE (e.g. "
                               "\"pneumothorax=0.05\")")
    try:
      out[name.strip()] = float(rate)
    except ValueError:
      raise errors.ConfigError(f"--priors: the rate of {name.strip()!r} is {rate.strip()!r}, "
                               "not a number between 0 and 1") from None
  return out


def file_logits(model: Model, files: Sequence[str], classes: Sequence[str], prompts=None,
                progress: bool = True, what: str = "image"):
  """Yields, one batch of `files` at a time, (failed, rows, image embeddings [len(rows), D],
  zero-shot logits [len(rows), K]): `failed` the (index, reason) of its unreadable files, each
  also reported on an `error:` line on stderr; embeddings and logits are None when no file of
  the batch could be read."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top

  # disable=None: a bar on a terminal only, not in logs.
  bar = tqdm(total=len(files), unit=what, file=sys.stderr,
             disable=True if not progress or len(files) < 2 else None)
  for start in range(0, len(files), model.batch_size):
    batch, rows, failed = [], [], []
    for i in range(start, min(start + model.batch_size, len(files))):
      try:
        batch.append(model.preprocess(files[i]))
        rows.append(i)
      except errors.UserError as e:
        bar.write(f"error: {e}", file=sys.stderr)
        failed.append((i, str(getattr(e, "reason", e))))
      bar.update(1)
    if not rows:
      yield failed, rows, None, None
      continue
    emb = model.embed_pixels(np.stack(batch))
    yield failed, rows, emb, model.zero_shot_logits(emb, classes, prompts)[1]
  bar.close()


def population_logits(model: Model, files: Sequence[str], classes: Sequence[str],
                      prompts=None) -> np.ndarray:
  """[M, K] zero-shot logits of the readable image files of a population (for calibration);
  unreadable files are reported on stderr and left out."""
  logits = [logits for _, rows, _, logits in
            file_logits(model, files, classes, prompts, what="calibration image") if rows]
  return np.concatenate(logits) if logits else np.zeros((0, len(classes)))


def predict_files(model: Model, files: Sequence[str], *, findings=None, prompts=None,
                  priors: Mapping[str, float] | None = None,
                  reports: Sequence[str] | None = None, top_k_reports: int = 5,
                  progress: bool = True, calibrate_on: Sequence[str] | None = None,
                  offsets: DecisionOffsets | None = None) -> list[dict[str, Any]]:
  """Scores image files one batch at a time; an unreadable file gets an "error" and is skipped.
  `priors`, `calibrate_on` (image files of the population the priors describe) and `offsets` (an
  evaluation's, instead): see clipmed.predict.decision.decision_offset.

  Returns:
    One record per file, in order: {"file", "error" (None or the reason), "findings": {name:
    probability}, "reports": [{"rank", "index", "report", "similarity"}]}.
  """
  if offsets is not None and findings is None:
    findings = list(offsets.classes)
  classes, _ = model.prompt_sets(findings, prompts)  # checks the findings before any work
  population = None
  if calibrate_on is not None:
    population = functools.partial(population_logits, model, calibrate_on, classes, prompts)
  offset = decision_offset(model, classes, prompts, priors=priors, offsets=offsets,
                           population=population)
  report_emb = model.embed_reports(reports) if reports else None
  records = [{"file": f, "error": None, "findings": {}, "reports": []} for f in files]
  for failed, rows, emb, logits in file_logits(model, files, classes, prompts, progress):
    for i, reason in failed:
      records[i]["error"] = reason
    if not rows:
      continue
    probs = probabilities(logits, offset)
    if report_emb is not None:
      index, sims = top_k(emb, report_emb, top_k_reports)
    for j, i in enumerate(rows):
      records[i]["findings"] = {c: float(probs[j, k]) for k, c in enumerate(classes)}
      if report_emb is not None:
        records[i]["reports"] = [
            {"rank": r + 1, "index": int(index[j, r]), "report": reports[index[j, r]],
             "similarity": float(sims[j, r])} for r in range(index.shape[1])]
  return records


def write_records(records: Sequence[Mapping[str, Any]], output: str | None) -> None:
  """JSON (a list of records) for *.json, else CSV (one row per file) to `output` or stdout."""
  if output and output.lower().endswith(".json"):
    with open(output, "w", encoding="utf-8") as f:
      json.dump(list(records), f, indent=1)
      f.write("\n")
    return
  findings = list(dict.fromkeys(k for r in records for k in r["findings"]))
  top = max((len(r["reports"]) for r in records), default=0)
  header = (["file", "error"] + findings
            + [f"{kind}_{n}" for n in range(1, top + 1) for kind in ("report", "similarity")])
  out = open(output, "w", encoding="utf-8", newline="") if output else sys.stdout
  try:
    writer = csv.writer(out)
    writer.writerow(header)
    for r in records:
      row = [r["file"], r["error"] or ""] + [
          "" if r["error"] else f"{r['findings'][c]:.6f}" for c in findings]
      for hit in r["reports"]:
        row += [hit["report"], f"{hit['similarity']:.6f}"]
      writer.writerow(row + [""] * (len(header) - len(row)))
  finally:
    if output:
      out.close()


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog="python -m clipmed.predict",
      description="Score chest X-ray image files with a trained clipmed model.")
  parser.add_argument("--model", required=True, help="a training workdir or an export directory")
  parser.add_argument("--images", nargs="+", required=True,
                      help="image files and/or directories (searched recursively)")
  parser.add_argument("--findings", default=None,
                      help="comma-separated findings to score (default: the model's)")
  parser.add_argument("--prompts", default=None,
                      help="prompt set name (chexpert, cxr14, ...) or a .json prompt file")
  parser.add_argument("--priors", default=None,
                      help="comma-separated FINDING=RATE prior rates (e.g. \"pneumothorax=0.05\"): "
                           "probabilities for a population with those rates; without, a "
                           "finding's probability is read at even odds and runs high for a rare "
                           "finding")
  parser.add_argument("--calibrate-on", nargs="+", default=None, metavar="IMAGES",
                      help="image files and/or directories of the population the --priors "
                           "describe (no labels): each finding's offset is fitted so that their "
                           "mean probability equals its prior; needs a prior for every finding")
  parser.add_argument("--offsets-from", default=None, metavar="DIR",
                      help="a training workdir or an export (or the .npz file itself): use "
                           "the yes/no offsets its evaluation fitted, so that a probability "
                           "above 1/2 is the evaluation's \"yes\" (same step and prompts)")
  parser.add_argument("--reports", default=None,
                      help="CSV with a \"report\" column: retrieve the closest reports")
  parser.add_argument("--top-k", type=int, default=5, help="reports retrieved per image")
  parser.add_argument("--output", default=None, help="out.csv or out.json (default: CSV on stdout)")
  parser.add_argument("--step", type=int, default=None, help="workdir checkpoint step")
  parser.add_argument("--config", default=None,
                      help="the training config (configs/x.py[:arg]) of a workdir without "
                           "config.json")
  parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
  args = _parse_args(sys.argv[1:] if argv is None else argv)
  from clipmed import console  # pylint: disable=g-import-not-at-top
  with console.user_errors_exit():
    if args.batch_size < 1:
      raise errors.ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    files = find_images(args.images)
    if not files:
      raise errors.FileError(f"--images {' '.join(args.images)}: no image files found")
    reports = read_reports(args.reports) if args.reports else None
    findings = [f for f in args.findings.split(",") if f.strip()] if args.findings else None
    priors = parse_priors(args.priors) if args.priors else None
    calibration = None
    if args.calibrate_on:
      calibration = find_images(args.calibrate_on, flag="--calibrate-on")
      if not calibration:
        raise errors.FileError(f"--calibrate-on {' '.join(args.calibrate_on)}: no image files "
                               "found")
    if args.offsets_from and (args.priors or args.calibrate_on):
      raise errors.ConfigError("give either --offsets-from or --priors (and --calibrate-on), not "
                               "both")
    offsets = evaluation_offsets(args.offsets_from) if args.offsets_from else None
    model = load(args.model, args.step, config=args.config, batch_size=args.batch_size)
    records = predict_files(model, files, findings=findings, prompts=args.prompts,
                            priors=priors, reports=reports, top_k_reports=args.top_k,
                            calibrate_on=calibration, offsets=offsets)
    write_records(records, args.output)
  failed = sum(r["error"] is not None for r in records)
  print(f"scored {len(files) - failed} of {len(files)} images"
        + (f"; {failed} unreadable (listed above)" if failed else "")
        + (f"; wrote {args.output}" if args.output else ""), file=sys.stderr)
  return 0 if failed < len(files) else 1
