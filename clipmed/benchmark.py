"""Benchmarks: `python -m clipmed.benchmark SUBCOMMAND [flags]`; each prints one JSON line.

  python -m clipmed.benchmark train --config=configs/full.py:row=clip --batch 8 --steps 5
  python -m clipmed.benchmark input --config=configs/full.py:dataset=synth_cxr \
      --config.data.tokenizer= --batches 20
  python -m clipmed.benchmark eval --config=configs/full.py --batch 32
  python -m clipmed.benchmark loss --batch 1024 --devices 8
  python -m clipmed.benchmark wordpiece --reports 200000 --vocab-size 30000
  python -m clipmed.benchmark prepare --dataset mimic_cxr --manual_dir DIR [--workers 1]
  python -m clipmed.benchmark embed --config full --batch 32

train, input and eval take the config exactly as `python -m clipmed.main` does (`--config=FILE[:args]`
and `--config.key=value` overrides). `train` times the real train step, built and compiled by
clipmed/step_builder.py as training builds it, on random weights and a random batch of the
config's shapes (nothing is read or downloaded).

Subcommands live in the `SUBCOMMANDS` dict: name -> (add_arguments(parser), run(args)). To add
one, write those two functions and add an entry. `--devices N` (every subcommand) forces N host
(CPU) devices: JAX fixes the device count when it starts, so the process re-executes itself with
XLA_FLAGS set before JAX starts its backends (importing JAX does not start them).
"""

import argparse
from collections.abc import Callable, Sequence
import json
import os
import resource
import sys
import tempfile
import time
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
import numpy as np

from clipmed import losses
from input_pipeline import tokenizer as tokenizer_lib
from input_pipeline import wordpiece

_DEVICE_FLAG = "--xla_force_host_platform_device_count"
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _ensure_host_devices(num_devices: int, argv: Sequence[str]) -> None:
  """Re-executes this module with N forced CPU devices unless XLA_FLAGS already says so."""
  flags = os.environ.get("XLA_FLAGS", "").split()
  wanted = f"{_DEVICE_FLAG}={num_devices}"
  if wanted in flags and os.environ.get("JAX_PLATFORMS") == "cpu":
    return
  env = dict(os.environ)
  env["XLA_FLAGS"] = " ".join([f for f in flags if not f.startswith(_DEVICE_FLAG)] + [wanted])
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, env.get("PYTHONPATH")) if p)
  sys.stdout.flush()
  os.execve(sys.executable, [sys.executable, "-m", "clipmed.benchmark", *argv], env)


def _time_ms(fn: Callable[[], object], repeats: int) -> float:
  """Median wall time of `fn()` in milliseconds (blocking on its outputs), after one warm-up."""
  jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append((time.perf_counter() - start) * 1e3)
  return sorted(times)[len(times) // 2]


def _add_loss_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--batch", type=int, default=1024, help="global batch size B")
  parser.add_argument("--dim", type=int, default=128, help="embedding width D")
  parser.add_argument("--loss-type", default="softmax", choices=("softmax", "sigmoid"))
  parser.add_argument("--repeats", type=int, default=5, help="timed runs (median reported)")


def run_loss(args: argparse.Namespace) -> dict[str, object]:
  """Memory and time of the full loss, forward and backward, sharded over all devices.

  Hard negatives and all three streams (text, clinical, graph): value_and_grad of
  `sharded_clinic_loss` w.r.t. the five embedding arrays, batch-sharded over a 1-D "data" mesh
  (Auto axes, as clipmed/sharding.py makes them). Bytes are the compiled per-device program's
  temp + output bytes.
  """
  num_devices = jax.device_count()
  if args.batch % num_devices:
    raise SystemExit(f"--batch {args.batch} is not divisible by {num_devices} devices.")
  # Auto axes, like the train step's mesh (clipmed/sharding.py).
  mesh = jax.make_mesh((num_devices,), ("data",), axis_types=(AxisType.Auto,))
  keys = jax.random.split(jax.random.key(0), 7)
  names = ("image", "text", "graph", "neg_text", "neg_graph")
  emb = {}
  for key, name in zip(keys, names):
    x = jax.random.normal(key, (args.batch, args.dim), jnp.float32)
    emb[name] = x / jnp.linalg.norm(x, axis=-1, keepdims=True)
  labels = (jax.random.uniform(keys[5], (args.batch, 14)) > 0.7).astype(jnp.float32)
  neg_labels = (jax.random.uniform(keys[6], (args.batch, 14)) > 0.7).astype(jnp.float32)
  sharding = NamedSharding(mesh, P("data"))
  emb, labels, neg_labels = jax.device_put((emb, labels, neg_labels), sharding)
  spec = losses.LossSpec(thresholds=dict(text=0.5, clinical=0.5, graph=0.5),
                         weights=dict(text=1.0, clinical=1.0, graph=1.0),
                         loss_type=args.loss_type)

  def total(e, c, c_neg):
    outputs = {"image": e["image"], "text": e["text"], "graph": e["graph"],
               "negative": {"text": e["neg_text"], "graph": e["neg_graph"]},
               "logit_scale": jnp.float32(10.0)}
    batch = {"labels": c, "negative": {"labels": c_neg}}
    return losses.sharded_clinic_loss(outputs, batch, spec, mesh=mesh, data_axes=("data",))[0]

  step = jax.jit(jax.value_and_grad(total))
  compiled = step.lower(emb, labels, neg_labels).compile()
  memory = compiled.memory_analysis()
  loss_bytes = int(memory.temp_size_in_bytes + memory.output_size_in_bytes)
  loss_ms = _time_ms(lambda: compiled(emb, labels, neg_labels), args.repeats)
  return {"batch": args.batch, "devices": num_devices, "loss_bytes_per_device": loss_bytes,
          "loss_ms": round(loss_ms, 3), "dim": args.dim, "loss_type": args.loss_type}


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


def _add_embed_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--config", default="full", choices=("full", "demo", "tiny"),
                      help="the model of configs/<config>.py (random weights)")
  parser.add_argument("--batch", type=int, default=32, help="images per call (eval_batch_size)")
  parser.add_argument("--repeats", type=int, default=3)


def run_embed(args: argparse.Namespace) -> dict[str, object]:
  """Evaluation cost: image embeddings per second of a config's model (the Embedder's jitted
  encode_image at the config's image size), random weights, after compilation."""
  import importlib  # pylint: disable=g-import-not-at-top
  from clipmed import batch as batch_lib  # pylint: disable=g-import-not-at-top
  from clipmed.models import clip as clip_lib  # pylint: disable=g-import-not-at-top

  config = importlib.import_module(f"configs.{args.config}").get_config()
  model = clip_lib.create_model(config.model, vocab_size=30522)
  spec = batch_lib.BatchSpec.from_config(config, num_classes=14)
  params = jax.jit(lambda key: model.init(key, spec.zeros(1), train=False)["params"])(
      jax.random.key(0))
  images = jnp.zeros((args.batch, spec.image_size, spec.image_size, spec.channels), jnp.float32)
  embed = jax.jit(lambda p, x: model.apply({"params": p}, x, method=model.encode_image))
  ms = _time_ms(lambda: embed(params, images), args.repeats)
  return {"config": args.config, "image_size": spec.image_size, "batch": args.batch,
          "ms_per_batch": round(ms, 1), "images_per_s": round(args.batch / ms * 1e3, 2),
          "seconds_per_1000_images": round(1e3 * ms / args.batch / 1e3, 1)}


def _add_train_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--batch", type=int, default=None, help="global batch (default: the "
                      "config's batch_size)")
  parser.add_argument("--steps", type=int, default=5, help="timed steps (after 2 warm-up steps)")
  parser.add_argument("--init", default="random", choices=("random", "pretrained"),
                      help="random weights, or the config's pretrained ones (may download)")
  parser.add_argument("--peak_tflops", type=float, default=None,
                      help="the device's datasheet peak TFLOP/s (default: measure a matmul)")


def _random_batch(spec: Any, batch_size: int, vocab_size: int, seed: int) -> dict[str, Any]:
  """A batch of `spec` with random pixels, token ids and labels; attention masks all ones and
  graphs empty (static shapes: the step does the same work on any content)."""
  rng = np.random.default_rng(seed)
  batch = spec.zeros(batch_size)
  batch["image"] = rng.standard_normal(batch["image"].shape, np.float32)
  reports = [batch] + ([batch["negative"]] if spec.negatives else [])
  for report in reports:
    report["input_ids"] = rng.integers(0, vocab_size, report["input_ids"].shape, np.int32)
    report["labels"] = (rng.random(report["labels"].shape) > 0.7).astype(np.float32)
  return batch


def _median_and_spread(times_ms: list[float]) -> dict[str, float]:
  ordered = sorted(times_ms)
  return {"median": round(ordered[len(ordered) // 2], 1), "min": round(ordered[0], 1),
          "max": round(ordered[-1], 1)}


def run_train(args: argparse.Namespace) -> dict[str, object]:
  """Step time, throughput and MFU of the config's real train step (see the module docstring).

  model_flops_per_step is XLA's cost analysis of the compiled step (all devices; with
  grad_accum_steps > 1 it counts the second forward pass too); peak_flops is --peak_tflops x
  devices, or a float32 matmul measured on all devices in this process.
  """
  from clipmed import preflight, state as state_lib, step_builder  # pylint: disable=g-import-not-at-top
  from clipmed.models import pretrained  # pylint: disable=g-import-not-at-top

  config = args.config_dict
  batch_size = int(args.batch or config.batch_size)
  with config.unlocked():
    config.batch_size = batch_size
  vocab_size, num_classes, note = preflight.shape_facts(config)
  parts = step_builder.build_step_parts(config, vocab_size=vocab_size, num_classes=num_classes)
  start = time.perf_counter()
  compiled = parts.compile_train_step(batch_size)
  compile_s = time.perf_counter() - start
  cost = preflight.step_cost(parts, compiled, batch_size)
  load = None
  if args.init == "pretrained":
    load = lambda p: pretrained.init_clip_params(p, model_config=config.model)  # noqa: E731
  state, _ = state_lib.create_sharded_state(parts.init_params, parts.tx, jax.random.key(0),
                                            parts.mesh, parts.rules, params_transform=load)
  batch = jax.device_put(_random_batch(parts.batch_spec, batch_size, vocab_size, 0),
                         parts.batch_sharding)
  rng = jax.random.key(1)
  times = []
  for i in range(args.steps + 2):
    start = time.perf_counter()
    state, _, info = jax.block_until_ready(compiled(state, batch, rng))
    if i >= 2:
      times.append((time.perf_counter() - start) * 1e3)
  if not bool(info["finite"]):
    raise RuntimeError("the benchmarked step was not finite")
  if args.peak_tflops:
    peak, source = args.peak_tflops * 1e12 * cost.devices, "--peak_tflops x devices"
  else:
    peak, source = preflight.measure_peak_flops(), "float32 matmul measured on all devices"
  step = _median_and_spread(times)
  result = {
      "benchmark": "train", "row": _row_name(config), "batch": batch_size,
      "devices": cost.devices, "platform": jax.devices()[0].platform,
      "dtype": str(np.dtype(_compute_dtype(config))), "remat": config.model.remat,
      "grad_accum_steps": int(config.grad_accum_steps), "step_ms": step,
      "samples_per_s": round(batch_size / step["median"] * 1e3, 3),
      "model_flops_per_step": cost.flops, "peak_flops": peak, "peak_flops_source": source,
      "mfu": round(cost.flops / (step["median"] / 1e3) / peak, 4),
      "compile_s": round(compile_s, 1), "peak_memory_bytes": cost.needed_bytes}
  if note:
    result["note"] = note
  return result


def _compute_dtype(config):
  from clipmed.models import clip as clip_lib  # pylint: disable=g-import-not-at-top
  return clip_lib.compute_dtype(config.model)


def _row_name(config) -> str:
  """The configs/common.py ROWS entry the config's loss and graph settings match, else 'custom'."""
  from configs import common  # pylint: disable=g-import-not-at-top
  for name in common.ROWS:
    probe = common.base_config()
    common.apply_row(probe, name)
    if (probe.loss.to_dict() == config.loss.to_dict()
        and probe.model.graph.enabled == config.model.graph.enabled):
      return name
  return "custom"


def _add_input_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--batches", type=int, default=20, help="timed batches (after 2)")


def run_input(args: argparse.Namespace) -> dict[str, object]:
  """Throughput of the config's Grain training pipeline with every extra it needs (hard
  negatives, graphs), on this process's data (SynthCXR is generated on first use)."""
  import input_pipeline  # pylint: disable=g-import-not-at-top
  from clipmed import batch as batch_lib  # pylint: disable=g-import-not-at-top

  config = args.config_dict
  dataset = input_pipeline.open_dataset(config.data)
  spec = batch_lib.BatchSpec.from_config(config, num_classes=len(dataset.class_names))
  iterator = input_pipeline.create_train_iterator(
      config.data, source=dataset.source("train"), tokenizer=dataset.tokenizer, spec=spec,
      class_names=dataset.class_names, global_batch_size=int(config.batch_size), seed=0)
  for _ in range(2):
    next(iterator)
  start, cpu_start = time.perf_counter(), time.process_time()
  for _ in range(args.batches):
    next(iterator)
  seconds = time.perf_counter() - start
  return {"benchmark": "input", "dataset": config.data.name, "batch": int(config.batch_size),
          "negatives": spec.negatives, "graphs": spec.graph is not None,
          "worker_count": int(config.data.worker_count), "batches": args.batches,
          "samples_per_s": round(args.batches * int(config.batch_size) / seconds, 2),
          "cpu_s_per_batch": round((time.process_time() - cpu_start) / args.batches, 4)}


def _add_eval_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--batch", type=int, default=None,
                      help="rows per call (default: the config's eval_batch_size)")
  parser.add_argument("--repeats", type=int, default=3)


def run_eval(args: argparse.Namespace) -> dict[str, object]:
  """Evaluation cost of the config's model: image and report embeddings per second (the jitted
  encoders evaluation uses), random weights, after compilation."""
  from clipmed import preflight  # pylint: disable=g-import-not-at-top
  from clipmed import batch as batch_lib  # pylint: disable=g-import-not-at-top
  from clipmed.models import clip as clip_lib  # pylint: disable=g-import-not-at-top

  config = args.config_dict
  batch_size = int(args.batch or config.eval_batch_size)
  vocab_size, num_classes, _ = preflight.shape_facts(config)
  model = clip_lib.create_model(config.model, vocab_size=vocab_size)
  spec = batch_lib.BatchSpec.from_config(config, num_classes=num_classes)
  params = jax.jit(lambda key: model.init(key, spec.zeros(1), train=False)["params"])(
      jax.random.key(0))
  batch = _random_batch(spec, batch_size, vocab_size, 0)
  images = jnp.asarray(batch["image"])
  ids, mask = jnp.asarray(batch["input_ids"]), jnp.asarray(batch["attention_mask"])
  encode_image = jax.jit(lambda p, x: model.apply({"params": p}, x, method=model.encode_image))
  encode_text = jax.jit(lambda p, i, m: model.apply({"params": p}, i, m,
                                                    method=model.encode_text))
  image_ms = _time_ms(lambda: encode_image(params, images), args.repeats)
  text_ms = _time_ms(lambda: encode_text(params, ids, mask), args.repeats)
  return {"benchmark": "eval", "batch": batch_size, "devices": jax.device_count(),
          "images_per_s": round(batch_size / image_ms * 1e3, 2),
          "reports_per_s": round(batch_size / text_ms * 1e3, 2)}


def _load_config(config_args: Sequence[str]) -> Any:
  """The config of `--config=FILE[:args]` and `--config.key=value` items, parsed exactly as
  clipmed.main parses them (a user mistake: one line and exit status 2)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  from clipmed import console, errors  # pylint: disable=g-import-not-at-top
  # A flag set of its own: clipmed.main or clipmed.evaluate may have defined --config on absl's
  # global flags in this process (a notebook, the tests).
  flag_values = flags.FlagValues()
  holder = config_flags.DEFINE_config_file(
      "config", None, "Path to a config file, optionally with ':key=value,...' arguments.",
      lock_config=True, flag_values=flag_values)
  console.parse_flags(["clipmed.benchmark", *config_args], flag_values=flag_values)
  if holder.value is None:
    raise errors.ConfigError("pass --config=FILE[:args], e.g. --config=configs/full.py")
  return console.config_value(holder)


# Subcommands whose --config is a config file with overrides, as in clipmed.main.
CONFIG_SUBCOMMANDS = ("train", "input", "eval")

# name -> (add_arguments, run). run returns the JSON-serialisable result line.
SUBCOMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None],
                             Callable[[argparse.Namespace], dict[str, object]]]] = {
    "train": (_add_train_arguments, run_train),
    "input": (_add_input_arguments, run_input),
    "eval": (_add_eval_arguments, run_eval),
    "loss": (_add_loss_arguments, run_loss),
    "prepare": (_add_prepare_arguments, run_prepare),
    "embed": (_add_embed_arguments, run_embed),
    "wordpiece": (_add_wordpiece_arguments, run_wordpiece),
}


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="python -m clipmed.benchmark", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="command", required=True)
  for name, (add_arguments, _) in SUBCOMMANDS.items():
    sub_parser = sub.add_parser(name)
    sub_parser.add_argument("--devices", type=int, default=None,
                            help="force this many host (CPU) devices (default: JAX's devices)")
    add_arguments(sub_parser)
  return parser


def main(argv: Sequence[str] | None = None) -> None:
  argv = list(sys.argv[1:] if argv is None else argv)
  config_args = []
  if argv and argv[0] in CONFIG_SUBCOMMANDS:
    config_args = [a for a in argv if a.startswith("--config")]
  args = build_parser().parse_args([a for a in argv if a not in config_args])
  if args.devices is not None:
    _ensure_host_devices(args.devices, argv)
  if args.command in CONFIG_SUBCOMMANDS:
    from clipmed import console  # pylint: disable=g-import-not-at-top
    with console.user_errors_exit():
      args.config_dict = _load_config(config_args)
  result = SUBCOMMANDS[args.command][1](args)
  print(json.dumps(result), flush=True)


if __name__ == "__main__":
  main()
