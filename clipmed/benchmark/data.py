"""The data's benchmarks (clipmed.benchmark): prepare (dataset preparation) and wordpiece
(tokenizer training on a synthetic radiology-like corpus)."""

import argparse
import json
import os
import resource
import tempfile
import time

import numpy as np

from input_pipeline import tokenizer as tokenizer_lib
from input_pipeline import wordpiece

# Frequent report words; the synthetic corpus adds a long tail of rarer medical-looking words.
_REPORT_WORDS = """the lungs are clear no pleural effusion or pneumothorax heart size is normal
mediastinal contours within limits there focal consolidation acute cardiopulmonary process
moderate small large left right bilateral basilar apical atelectasis opacity opacities edema
pulmonary vascular congestion cardiomegaly enlarged stable unchanged compared to prior study
interval improvement worsening of and with in at a an on from since which may represent
pneumonia aspiration infection endotracheal tube terminates cm above carina nasogastric courses
below diaphragm stomach tip right-sided central venous catheter svc cavoatrial junction sternal
wires median sternotomy surgical clips chest radiograph portable upright frontal lateral views
provided findings impression mild severe trace layering dependent lower upper lobe lobes hilar
hila silhouette aorta tortuous calcified knob degenerative changes thoracic spine osseous
structures fracture rib ribs old healed subcutaneous emphysema free air elevated hemidiaphragm
retrocardiac lingula middle granuloma nodule nodules mass suspicious recommend ct follow-up
evaluation clinical correlation""".split()
_PREFIXES = ("cardio pneumo hemo broncho peri sub intra trans para retro hyper hypo endo "
             "epi myo osteo thoraco costo pleuro angio lympho neuro gastro hepato nephro "
             "spleno cholecysto laryngo tracheo esophago mediastino").split()
_ROOTS = ("megal thorac pleur pulmon bronch alveol vascul arter ven cost stern clavic scapul "
          "diaphragm hil lob segment interstiti reticul nodul calcif fibr emphysem atelect "
          "consolid effus opac infiltr edem congest aspir pneumon granulom carcin metast "
          "lymphaden cyst bull bleb cavit abscess empyem hemorrhag contus lacer fractur "
          "sclerot lytic degenerat spondyl kyphot scoliot osteopen").split()
_SUFFIXES = ("al ic ar ous osis itis oma ectomy ostomy otomy ation ated ating ia ism ity ive "
             "ial iform oid ular ium ine").split()


def _zipf(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
  """`size` indices in [0, n) with P(i) proportional to (i + 1) ** -1.05."""
  weights = 1.0 / np.arange(1, n + 1) ** 1.05
  return rng.choice(n, size=size, p=weights / weights.sum())


def radiology_like_reports(num: int, words_per_report: int, seed: int = 0) -> list[str]:
  """Report-like text for tokenizer timing: Zipf-distributed words, numbers, a long rare tail.

  85% of the words are 147 frequent report words, 15% a long tail of 37,789 morpheme compounds
  ("pleurocardiomegalic") and 20,000 random letter strings (names, abbreviations, typos), each part
  drawn with Zipf weights (exponent 1.05); 5% of the words are then replaced by numbers. Sentences
  average 9 words.

  Args:
    num: number of reports.
    words_per_report: words per report (sentence punctuation comes on top).
    seed: seed of the generator (np.random.default_rng).

  Returns:
    `num` strings.
  """
  rng = np.random.default_rng(seed)
  compounds = [p + r + s for p in _PREFIXES for r in _ROOTS for s in _SUFFIXES]
  letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
  strings = ["".join(rng.choice(letters, size=rng.integers(2, 11))) for _ in range(20_000)]
  tail = np.array([compounds[i] for i in rng.permutation(len(compounds))] + strings,
                  dtype=object)
  total = num * words_per_report
  # 85% of the words are frequent report words, as in real reports; Zipf within each part.
  from_tail = rng.random(total) < 0.15
  words = np.array(_REPORT_WORDS, dtype=object)[_zipf(rng, len(_REPORT_WORDS), total)]
  words[from_tail] = tail[_zipf(rng, len(tail), int(from_tail.sum()))]
  numbers = rng.random(total) < 0.05
  words[numbers] = [f"{x:.1f}" if x < 10 else str(int(x))
                    for x in rng.exponential(8, int(numbers.sum()))]
  sentence_ends = rng.random(total) < 1 / 9
  reports = []
  for r in range(num):
    out, capital = ["FINDINGS:"], True
    for i in range(r * words_per_report, (r + 1) * words_per_report):
      word = words[i].capitalize() if capital else words[i]
      capital = bool(sentence_ends[i])
      out.append(word + "." if capital else word)
    reports.append(" ".join(out) + ".")
  return reports


def _add_wordpiece_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--corpus", default="synthetic", choices=("synthetic", "synthcxr"),
                      help="radiology_like_reports, or SynthCXR train reports (seed 0)")
  parser.add_argument("--reports", type=int, default=200_000, help="number of reports")
  parser.add_argument("--words", type=int, default=60, help="words per synthetic report")
  parser.add_argument("--vocab-size", type=int, default=30_000, help="WordPiece vocabulary size")


def run_wordpiece(args: argparse.Namespace) -> dict[str, object]:
  """Time of train_wordpiece (count words, learn merges, save) on one core, and of its phases.

  The phases are timed again separately with the trained tokenizer's normaliser and pre-tokeniser
  (count_cpu_s: word counting; learn_cpu_s: alphabet and merges); CPU seconds are the steadier
  numbers on a shared machine.
  """
  start = time.perf_counter()
  if args.corpus == "synthetic":
    texts = radiology_like_reports(args.reports, args.words)
  else:
    from input_pipeline.synthcxr import generate  # pylint: disable=g-import-not-at-top
    texts = [generate.generate_report(0, "train", i) for i in range(args.reports)]
  make_s = time.perf_counter() - start
  with tempfile.TemporaryDirectory() as out_dir:
    start, cpu_start = time.perf_counter(), time.process_time()
    tokenizer_lib.train_wordpiece(texts, out_dir, args.vocab_size)
    train_s, train_cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
    tok = tokenizer_lib.load_tokenizer(out_dir)
  normalizer, pre_tokenizer = tok.backend_tokenizer.normalizer, tok.backend_tokenizer.pre_tokenizer
  cpu_start = time.process_time()
  counts = wordpiece.count_words(texts, normalizer, pre_tokenizer, tokenizer_lib.MAX_WORD_CHARS)
  count_cpu_s = time.process_time() - cpu_start
  cpu_start = time.process_time()
  alphabet = wordpiece.initial_alphabet(counts, normalizer, pre_tokenizer)
  vocab = wordpiece.learn_vocabulary(counts, alphabet, args.vocab_size,
                                     tokenizer_lib.SPECIAL_TOKENS)
  learn_cpu_s = time.process_time() - cpu_start
  if vocab != tok.convert_ids_to_tokens(list(range(len(tok)))):
    raise RuntimeError("the phases timed separately learned a different vocabulary")
  return {"corpus": args.corpus, "reports": len(texts), "words": sum(counts.values()),
          "distinct_words": len(counts), "vocab_size": args.vocab_size, "vocab_len": len(vocab),
          "train_s": round(train_s, 1), "train_cpu_s": round(train_cpu_s, 1),
          "count_cpu_s": round(count_cpu_s, 1), "learn_cpu_s": round(learn_cpu_s, 1),
          "make_corpus_s": round(make_s, 1),
          "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}


def _add_prepare_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--dataset", required=True, help="a dataset of input_pipeline.datasets")
  parser.add_argument("--manual_dir", required=True, help="its download (or a part of it)")
  parser.add_argument("--image_size", type=int, default=512)
  parser.add_argument("--max_examples", type=int, default=0, help="studies per split (0: all)")
  parser.add_argument("--workers", type=int, default=1, help="1 measures one core")
  parser.add_argument("--max_reject_fraction", type=float, default=0.05)


def _du_bytes(path: str) -> int:
  return sum(os.path.getsize(os.path.join(root, name))
             for root, _, names in os.walk(path) for name in names)


def run_prepare(args: argparse.Namespace) -> dict[str, object]:
  """Wall and CPU time of `python -m input_pipeline.prepare` on a download, into a temporary
  data_dir: everything included (listing, report processing, image decoding and resizing, PNG
  encoding, writing, read-back, tokenizer), with the disk used per 10k studies."""
  from input_pipeline import prepare as prepare_lib  # pylint: disable=g-import-not-at-top

  def cpu_seconds():
    own, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                          resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

  with tempfile.TemporaryDirectory() as data_dir:
    cpu_start, start = cpu_seconds(), time.perf_counter()
    summary = prepare_lib.prepare(args.dataset, manual_dir=args.manual_dir, data_dir=data_dir,
                                  options={}, image_size=args.image_size,
                                  max_examples=args.max_examples, workers=args.workers,
                                  max_reject_fraction=args.max_reject_fraction, progress=False)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
    with open(os.path.join(summary["data_dir"], "clipmed_index.json"), encoding="utf-8") as f:
      index = json.load(f)
    studies = sum(len(set(fields["study_id"])) for fields in index.values())
    images = sum(len(fields["image_id"]) for fields in index.values())
    disk = _du_bytes(summary["data_dir"])
  return {"dataset": args.dataset, "workers": args.workers, "image_size": args.image_size,
          "studies": studies, "images": images, "rejected": summary["rejected"],
          "seconds": round(seconds, 1), "cpu_seconds": round(cpu, 1),
          "studies_per_s": round(studies / seconds, 2),
          "studies_per_cpu_s": round(studies / cpu, 2), "images_per_s": round(images / seconds, 2),
          "mb_per_10k_studies": round(disk / studies * 1e4 / 1e6, 1)}
