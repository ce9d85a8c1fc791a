"""Report tools on a CSV of reports: CheXpert labels and CXR-Align triplets.

    python -m clipmed.report label --input IN.csv --text-column COL --output OUT.csv
    python -m clipmed.report cxr-align --input IN.csv --text-column COL --output OUT.csv [--seed S]

label: writes the input columns plus the 14 category columns in CheXpert order: 1.0 positive, 0.0
negative, -1.0 uncertain, blank not mentioned. Reports with FINDINGS / IMPRESSION headers are
labeled on those sections. The default labeler is the offline rule labeler
(clipmed.report.labeler); --labeler chexbert uses a CheXbert checkpoint
(clipmed.report.chexbert_labeler) when you have one.

cxr-align: for each abnormal report writes one row: source_row (data row number in IN.csv, from
1), the --id-column values if given, chosen_entity (a CheXpert category name), report (the cleaned
original r: one finding per sentence, no references to prior studies), negated (r^n: the entity
replaced by a negative statement) and omitted (r^r: the entity's sentences removed). Normal
reports, and the rare abnormal reports whose entities cannot be changed cleanly, are skipped
(counted on stderr).

In both, repeat --text-column to join several columns (e.g. findings and impression).
"""

import argparse
from collections.abc import Sequence
import math
import sys

import numpy as np

from clipmed.errors import UserError
from clipmed.report import chexpert
from clipmed.report import csvio
from clipmed.report import hard_negatives
from clipmed.report import labeler


def format_label(value: float) -> str:
  """1.0 / 0.0 / -1.0, and blank for NaN (not mentioned)."""
  return "" if math.isnan(value) else f"{value:.1f}"


def _common_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--input", required=True, help="CSV file with a header row")
  parser.add_argument("--text-column", required=True, action="append",
                      help="report column; repeat to join several (e.g. findings, impression)")
  parser.add_argument("--output", required=True, help="CSV file to write")


def label(args: argparse.Namespace) -> None:
  """The `label` command."""
  header, rows = csvio.read_rows(args.input, args.text_column)
  out_columns = [args.prefix + c for c in chexpert.CATEGORIES]
  clash = [c for c in out_columns if c in header]
  if clash:
    raise UserError(f"{args.input} already has column(s) {clash}; pass --prefix (e.g. "
                    "--prefix pred_) so the labels get other names")
  texts = [csvio.row_text(r, args.text_column) for r in rows]
  empty = [i for i, t in enumerate(texts) if not t.strip()]
  if not args.skip_empty:
    csvio.check_not_empty(args.input, texts, args.text_column)
  if args.labeler == "chexbert":
    from clipmed.report import chexbert_labeler  # heavy imports only when asked for
    if not args.checkpoint:
      raise UserError("--labeler chexbert needs --checkpoint PATH (the CheXbert chexbert.pth)")
    labels = chexbert_labeler.CheXbertLabeler.from_checkpoint(
        args.checkpoint, args.vocab).label(texts)
  else:
    labels = labeler.label_reports(texts, progress=csvio.Progress(len(texts), "label"))
  labels[empty] = np.nan
  csvio.write_rows(args.output, header + out_columns, (
      [row.get(c, "") for c in header] + [format_label(float(v)) for v in vec]
      for row, vec in zip(rows, labels)))
  print(f"label: {len(texts)} reports labeled, written to {args.output}"
        + (f" ({len(empty)} empty reports left blank)" if empty else ""), file=sys.stderr)


def cxr_align(args: argparse.Namespace) -> None:
  """The `cxr-align` command."""
  header, rows = csvio.read_rows(args.input, args.text_column + args.id_column)
  del header
  texts = [csvio.row_text(r, args.text_column) for r in rows]
  if not args.skip_empty:
    csvio.check_not_empty(args.input, texts, args.text_column)
  triplets = hard_negatives.cxr_align_triplets(
      texts, seed=args.seed, progress=csvio.Progress(len(texts), "cxr-align"))
  columns = list(hard_negatives.TRIPLET_COLUMNS)
  csvio.write_rows(args.output, ["source_row"] + args.id_column + columns, (
      [str(t["source_row"])] + [rows[t["source_row"] - 1][c] for c in args.id_column]
      + [t[c] for c in columns] for t in triplets))
  print(f"cxr-align: {len(texts)} reports, {len(triplets)} triplets written to {args.output} "
        f"({len(texts) - len(triplets)} normal or unchangeable reports skipped)", file=sys.stderr)


def parser() -> argparse.ArgumentParser:
  top = argparse.ArgumentParser(prog="python -m clipmed.report",
                                description="Report tools for CSV files of chest X-ray reports.")
  commands = top.add_subparsers(dest="command", required=True)
  lab = commands.add_parser("label", help="label reports with the 14 CheXpert categories")
  _common_arguments(lab)
  lab.add_argument("--skip-empty", action="store_true",
                   help="leave the labels of empty reports blank instead of stopping")
  lab.add_argument("--prefix", default="",
                   help="prefix for the category columns, e.g. 'pred_' when the input already "
                        "has columns named like the categories")
  lab.add_argument("--labeler", choices=("rules", "chexbert"), default="rules",
                   help="rules (default, offline) or chexbert (needs --checkpoint)")
  lab.add_argument("--checkpoint", default="",
                   help="CheXbert checkpoint (chexbert.pth) for --labeler chexbert")
  lab.add_argument("--vocab", default="",
                   help="bert-base-uncased vocab.txt or tokenizer folder for --labeler chexbert")
  lab.set_defaults(run=label)
  align = commands.add_parser("cxr-align", help="build CXR-Align triplets (report, negated, "
                                                "omitted)")
  _common_arguments(align)
  align.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
  align.add_argument("--skip-empty", action="store_true",
                     help="skip rows with an empty report instead of stopping")
  align.add_argument("--id-column", action="append", default=[],
                     help="input column copied to the output (repeatable), e.g. a study id")
  align.set_defaults(run=cxr_align)
  return top


def run(argv: Sequence[str] | None = None) -> int:
  """Parses `argv` and runs the command; raises UserError for a user mistake."""
  args = parser().parse_args(argv)
  args.run(args)
  return 0


def main() -> None:
  try:
    sys.exit(run())
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  main()
