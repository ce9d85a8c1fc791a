"""CXR-Align triplets from a CSV of reports (METHOD.md, "CXR-Align").

    python -m clipmed.report.cxr_align --input IN.csv --text-column COL --output OUT.csv [--seed S]

For each abnormal report writes one row: source_row (data row number in IN.csv, from 1), the
--id-column values if given, chosen_entity (a CheXpert category name), report (the cleaned original
r: one finding per sentence, no references to prior studies), negated (r^n: the entity replaced by
a negative statement) and omitted (r^r: the entity's sentences removed). Normal reports, and the
rare abnormal reports whose entities cannot be changed cleanly, are skipped (counted on stderr).
"""

import argparse
from collections.abc import Callable, Sequence
import sys

import numpy as np

from clipmed.errors import UserError
from clipmed.report import csvio
from clipmed.report import hard_negatives

OUTPUT_COLUMNS = ("chosen_entity", "report", "negated", "omitted")


def build_triplets(texts: Sequence[str], *, seed: int = 0,
                   progress: Callable[[int], None] | None = None) -> list[dict[str, str]]:
  """CXR-Align triplets of abnormal reports.

  Each report draws from its own generator, np.random.default_rng([seed, row]), so a report's
  triplet does not depend on the other rows.

  Args:
    texts: N report texts.
    seed: random seed.
    progress: optional callback(done).

  Returns:
    Dicts with source_row (1-based) and OUTPUT_COLUMNS, in input order.
  """
  out = []
  for i, text in enumerate(texts):
    if text and text.strip():
      hn = hard_negatives.make_hard_negative(text, np.random.default_rng([seed, i]))
      if hn is not None:
        out.append({"source_row": i + 1, "chosen_entity": hn.entity, "report": hn.report,
                    "negated": hn.negated, "omitted": hn.omitted})
    if progress is not None:
      progress(i + 1)
  return out


def run(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m clipmed.report.cxr_align",
      description="Build CXR-Align triplets (report, negated, omitted) from a CSV of reports.")
  parser.add_argument("--input", required=True, help="CSV file with a header row")
  parser.add_argument("--text-column", required=True, action="append",
                      help="report column; repeat to join several (e.g. findings, impression)")
  parser.add_argument("--output", required=True, help="CSV file to write")
  parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
  parser.add_argument("--skip-empty", action="store_true",
                      help="skip rows with an empty report instead of stopping")
  parser.add_argument("--id-column", action="append", default=[],
                      help="input column copied to the output (repeatable), e.g. a study id")
  args = parser.parse_args(argv)
  header, rows = csvio.read_rows(args.input, args.text_column + args.id_column)
  texts = [csvio.row_text(r, args.text_column) for r in rows]
  if not args.skip_empty:
    csvio.check_not_empty(args.input, texts, args.text_column)
  progress = csvio.Progress(len(texts), "cxr_align")
  triplets = build_triplets(texts, seed=args.seed, progress=progress)
  out_header = ["source_row"] + args.id_column + list(OUTPUT_COLUMNS)
  csvio.write_rows(args.output, out_header, (
      [str(t["source_row"])] + [rows[t["source_row"] - 1][c] for c in args.id_column]
      + [t[c] for c in OUTPUT_COLUMNS] for t in triplets))
  print(f"cxr_align: {len(texts)} reports, {len(triplets)} triplets written to {args.output} "
        f"({len(texts) - len(triplets)} normal or unchangeable reports skipped)", file=sys.stderr)
  return 0


def main() -> None:
  try:
    sys.exit(run())
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  main()
