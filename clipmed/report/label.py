"""Labels a CSV of reports with CheXpert-14 categories (CheXpert labeler output format).

    python -m clipmed.report.label --input IN.csv --text-column COL --output OUT.csv

Writes the input columns plus the 14 category columns in CheXpert order: 1.0 positive, 0.0
negative, -1.0 uncertain, blank not mentioned. Repeat --text-column to label several columns
joined (e.g. findings and impression). Reports with FINDINGS / IMPRESSION headers are labeled on
those sections. The default labeler is the offline rule labeler (clipmed.report.labeler);
--labeler chexbert uses a CheXbert checkpoint (clipmed.report.chexbert) when you have one.
"""

import argparse
from collections.abc import Sequence
import math
import sys

import numpy as np

from clipmed.errors import UserError
from clipmed.report import chexpert
from clipmed.report import csvio
from clipmed.report import labeler


def format_label(value: float) -> str:
  """1.0 / 0.0 / -1.0, and blank for NaN (not mentioned)."""
  return "" if math.isnan(value) else f"{value:.1f}"


def run(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m clipmed.report.label",
      description="Label chest X-ray reports with the 14 CheXpert categories.")
  parser.add_argument("--input", required=True, help="CSV file with a header row")
  parser.add_argument("--text-column", required=True, action="append",
                      help="report column; repeat to join several (e.g. findings, impression)")
  parser.add_argument("--output", required=True, help="CSV file to write")
  parser.add_argument("--skip-empty", action="store_true",
                      help="leave the labels of empty reports blank instead of stopping")
  parser.add_argument("--prefix", default="",
                      help="prefix for the category columns, e.g. 'pred_' when the input already "
                           "has columns named like the categories")
  parser.add_argument("--labeler", choices=("rules", "chexbert"), default="rules",
                      help="rules (default, offline) or chexbert (needs --checkpoint)")
  parser.add_argument("--checkpoint", default="",
                      help="CheXbert checkpoint (chexbert.pth) for --labeler chexbert")
  parser.add_argument("--vocab", default="",
                      help="bert-base-uncased vocab.txt or tokenizer folder for --labeler chexbert")
  args = parser.parse_args(argv)

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
  progress = csvio.Progress(len(texts), "label")
  if args.labeler == "chexbert":
    from clipmed.report import chexbert  # heavy imports only when asked for
    if not args.checkpoint:
      raise UserError("--labeler chexbert needs --checkpoint PATH (the CheXbert chexbert.pth)")
    labels = chexbert.CheXbertLabeler.from_checkpoint(args.checkpoint, args.vocab).label(texts)
  else:
    labels = labeler.label_reports(texts, progress=progress)
  labels[empty] = np.nan
  csvio.write_rows(args.output, header + out_columns, (
      [row.get(c, "") for c in header] + [format_label(float(v)) for v in vec]
      for row, vec in zip(rows, labels)))
  print(f"label: {len(texts)} reports labeled, written to {args.output}"
        + (f" ({len(empty)} empty reports left blank)" if empty else ""), file=sys.stderr)
  return 0


def main() -> None:
  try:
    sys.exit(run())
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  main()
