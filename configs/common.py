"""Shared defaults for every clipmed config, and the `:key=value` argument parser.

Not a runnable config itself: configs/demo.py, configs/full.py, configs/ablations.py and
configs/tiny.py start from `base_config()` and change what they need. Every knob a user may turn
lives here, with its default; library code has no hidden defaults.
"""

import math
from typing import Any

import ml_collections

from clipmed import errors
from clipmed import sharding

# The paper's rows differ only in the loss block; see configs/ablations.py.
INFONCE_THRESHOLD = 1.0  # tau >= 1: targets are the identity, the soft-label loss is InfoNCE.


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
  """Parses a config argument such as "row=clip_n_dtc,steps=200" against typed defaults.

  Args:
    arg: the text after ':' in `--config=configs/x.py:ARG`, or None.
    **defaults: the accepted keys with their default values; the type of each default is the
      type its value is parsed to (bool accepts true/false/1/0).

  Returns:
    A ConfigDict with one field per default.

  Raises:
    ConfigError: on an unknown key or a value that does not parse, naming the accepted keys.
  """
  out = ml_collections.ConfigDict(defaults)
  if not arg:
    return out
  for item in arg.split(","):
    if not item.strip():
      continue
    if "=" not in item:
      raise errors.ConfigError(f"config argument {item!r} is not key=value; accepted keys: "
                       f"{sorted(defaults)}")
    key, value = (s.strip() for s in item.split("=", 1))
    if key not in defaults:
      raise errors.ConfigError(f"unknown config argument {key!r}; accepted keys: "
                               f"{sorted(defaults)}")
    default = defaults[key]
    try:
      if isinstance(default, bool):
        if value.lower() not in ("true", "false", "1", "0"):
          raise ValueError(value)
        out[key] = value.lower() in ("true", "1")
      else:
        out[key] = type(default)(value)
    except ValueError:
      raise errors.ConfigError(f"config argument {key}={value!r} is not a valid "
                       f"{type(default).__name__}") from None
  return out


def base_config() -> ml_collections.ConfigDict:
  """Defaults shared by all configs (a small model on SynthCXR, plain CLIP loss)."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.eval_seed = 0
  # Bit-identical runs on GPUs too: XLA's deterministic GPU kernels (scatter-adds, reductions),
  # somewhat slower. CPU and TPU runs are deterministic without it (README, "Reproducibility").
  config.deterministic = False

  config.data = ml_collections.ConfigDict(dict(
      name="synth_cxr",  # a key of input_pipeline.datasets.DATASETS
      data_dir="data/tfds",  # TFDS data_dir; SynthCXR is generated here on first use.
      # Real datasets are prepared once with `python -m input_pipeline.prepare` (README,
      # "Datasets"); `prepared` names which preparation to read (the prepare command's flags) and
      # manual_dir (the untouched download) is only used to print that command when it is missing.
      manual_dir="",
      prepared=dict(image_size=512, options={}, seed=0, max_examples=0, vocab_size=30000),
      views="frontal",  # "frontal" (PA, AP) or "all": the images used for training and evaluation
      # Training on several prepared datasets (the paper's Table 3): a list of dict(name=...,
      # weight=..., options={}, normal_only=False); [] trains on config.data.name alone. Grain
      # interleaves the train splits in proportion to the weights (configs/imbalance.py).
      mixture=[],
      # SynthCXR generation (used when name == "synth_cxr").
      synth=dict(image_size=128, num_train=6000, num_validation=500, num_test=1000, seed=0,
                 vocab_size=2000),
      image_size=128,  # model input size; images are resized when the dataset differs
      channels=1,      # 1 for models trained from scratch, 3 for ImageNet-pretrained encoders
      mean=0.5, std=0.25,  # pixel normalisation after scaling to [0, 1]
      max_text_length=96,
      # Training text: "report" (as written) or "report_clean" (one finding per sentence, no
      # comparisons with priors). Use report_clean with hard negatives, which are cleaned text:
      # otherwise the model can tell them apart by format alone.
      text_field="report",
      tokenizer="",  # "" = the dataset's own WordPiece; else a local path or hub id
      # Uncertain (-1) labels in the clinical vector and the evaluation labels: "ones" (U-Ones,
      # as positive), "zeros" (U-Zeros, as negative) or "ignore" (U-Ignore: left out of the
      # evaluation of that class, nothing in the clinical vector); clipmed.report.chexpert.
      uncertain_as="ones",
      augment=dict(enabled=True, crop_scale=(0.8, 1.0), crop_ratio=(0.9, 1.1),
                   rotation_degrees=5.0, brightness=0.1, contrast=0.1),
      worker_count=0,  # Grain worker processes; a checkpoint only resumes with the same count
      worker_buffer_size=2,
      read_threads=2,       # Grain reader threads per process
      read_buffer_size=4,   # batches prefetched per process
  ))

  config.model = ml_collections.ConfigDict(dict(
      embed_dim=128,
      logit_scale_init=math.log(1 / 0.07),
      logit_scale_max=100.0,
      dtype="float32",  # compute dtype ("auto": bfloat16 on GPU/TPU); parameters stay float32
      remat=False,      # rematerialise each transformer block in the backward pass
      # What a rematerialised block keeps: "nothing_saveable" (least memory), "dots_saveable"
      # (matmul outputs: less recomputation) or "dots_with_no_batch_dims_saveable" (weight
      # matmuls only; attention is recomputed).
      remat_policy="nothing_saveable",
      projection="linear",
      image=dict(name="swin", patch_size=4, embed_dim=96, depths=(2, 2, 6, 2),
                 num_heads=(3, 6, 12, 24), window_size=7, mlp_ratio=4.0, drop_path_rate=0.1,
                 init=""),
      text=dict(vocab_size=0, hidden_size=768, num_layers=12, num_heads=12,
                intermediate_size=3072, max_position_embeddings=512, type_vocab_size=2,
                dropout=0.1, pooling="cls", init=""),
      # Report-graph encoder (a GCN over RadGraph-schema graphs); padded on the host to these
      # static budgets (SynthCXR graphs: mean 12 nodes, 99th percentile 27, largest 44 nodes and
      # 24 edges).
      graph=dict(enabled=False, hidden_size=128, num_layers=2, max_nodes=48, max_edges=32,
                 max_node_tokens=8),
      # Start from every weight of a clipmed export (python -m clipmed.export); the model
      # settings above must match its config.json, and config.data.tokenizer should be its
      # tokenizer/ directory. Excludes image.init and text.init.
      init="",
  ))

  # The training objective. With every threshold >= 1 and only the text stream weighted, this is
  # plain InfoNCE (CLIP). docs/METHOD.md fixes the mathematics.
  config.loss = ml_collections.ConfigDict(dict(
      loss_type="softmax",  # "softmax" (KL to soft targets) or "sigmoid" (SigLIP-style)
      thresholds=dict(text=INFONCE_THRESHOLD, clinical=INFONCE_THRESHOLD,
                      graph=INFONCE_THRESHOLD),
      weights=dict(text=1.0, clinical=0.0, graph=0.0),
      hard_negatives=False,      # add each study's negation hard-negative report (METHOD.md)
      mask_own_negative=True,    # a report is never a soft positive of its own hard negative
      soft_labels="dynamic",     # "dynamic" (thresholded, the paper) or "softclip" (no threshold)
      softclip_temperature=0.1,  # only for soft_labels="softclip"
      logit_bias=None,           # sigmoid loss only: None, or the initial value of a learned bias
  ))

  config.optimizer = ml_collections.ConfigDict(dict(
      learning_rate=1e-4, end_learning_rate_factor=0.01, warmup_steps=100, weight_decay=0.05,
      b1=0.9, b2=0.98, grad_clip_norm=1.0,
  ))

  config.batch_size = 64  # global, over all processes and devices
  # Split each step's global batch into this many micro-batches (activations of batch_size /
  # grad_accum_steps rows at a time); the loss and its soft labels still see the global batch
  # (clipmed/train_step.py), so the step computes the same update, about a third slower.
  config.grad_accum_steps = 1
  # Before the first step, the compiled step's memory per device is compared with the device's
  # (memory_stats() on GPU/TPU, available RAM on CPU); a run that cannot fit stops with the
  # changes that would fit. device_memory_gb > 0 replaces the detected memory per device.
  config.preflight = ml_collections.ConfigDict(dict(enabled=True, device_memory_gb=0.0))
  config.num_train_steps = 1000
  config.log_every_steps = 20
  config.checkpoint_every_steps = 200
  config.keep_checkpoints = 3
  config.async_checkpointing = True
  # A step whose loss or gradients are not finite is skipped (train/skipped_steps); this many in a
  # row stop the run, naming the step and the last good checkpoint.
  config.max_consecutive_nonfinite_steps = 10

  # Mesh: named axes and sizes (-1 = all remaining devices). The rules map the models' logical
  # axis names to mesh axes (None = replicated). Data parallelism by default.
  config.mesh = ml_collections.ConfigDict(dict(
      shape=dict(data=-1),
      rules=[(sharding.BATCH, "data")],
  ))

  # Evaluations: each entry names a task of clipmed.evaluators.EVALUATORS and a dataset ("" = the
  # training dataset; another dataset is read from data_dir with config.data.prepared's settings).
  # every_steps = 0 runs it only after training; > 0 also every that many steps.
  config.eval_batch_size = 128  # global: each process embeds eval_batch_size / processes rows
  # TensorBoard pictures at each evaluation (clipmed/summaries.py): sample images with their
  # reports, logit and soft-label target matrices of the first num_examples studies of `split`,
  # zero-shot ROC curves over its first roc_examples studies, embedding-norm histograms.
  config.eval_summaries = dict(enabled=True, split="test", num_examples=16, num_images=4,
                               roc_examples=512)
  config.evals = ml_collections.ConfigDict()
  classes = ["Cardiomegaly", "Pleural Effusion", "Pneumothorax", "Support Devices", "Edema",
             "Lung Opacity", "Atelectasis", "Lung Lesion", "Fracture",
             "Enlarged Cardiomediastinum", "Pleural Other", "Consolidation", "Pneumonia"]
  common = dict(dataset="", split="test", every_steps=0, num_bootstrap=1000)
  # prior: the split whose class rates shift the zero-shot yes/no decision ("none" with
  # calibrate=False: the logit alone); calibrate: fit that shift on the split's images (False: the
  # rates' log odds alone); see clipmed/evaluators/prompt_sets.py.
  config.evals.zero_shot = dict(task="zero_shot", prompts="chexpert", classes=classes,
                                where={}, prior="train", calibrate=True, **common)
  config.evals.retrieval = dict(task="retrieval", ks=(1, 5, 10), **common)
  config.evals.linear_probe = dict(task="linear_probe", train_split="train", classes=classes,
                                   fractions=(0.01, 0.1, 1.0), weight_decay=1e-4,
                                   max_iterations=200, **common)
  config.evals.cxr_align = dict(task="cxr_align", **common)
  config.evals.adversarial = dict(task="adversarial", prompts="chexpert", classes=classes,
                                  prior="train", calibrate=True, **common)
  # One normal report among N abnormal ones (2,999 in the paper; capped by the split's size).
  config.evals.normal_detection = dict(task="normal_detection", num_abnormal=2999, **common)
  return config


# Thresholds and weights of the soft-label streams (METHOD.md leaves them to the project). Chosen
# on SynthCXR by the sweep recorded in the README ("Choosing the thresholds (sweep)").
THRESHOLDS = dict(text=0.9, clinical=0.75, graph=0.9)
WEIGHTS = dict(text=1.0, clinical=0.5, graph=0.5)

ROWS = {
    # name: (soft-label streams, hard negatives, graph encoder)
    "clip": ((), False, False),
    "clip_dt": (("text",), False, False),
    "clip_dtc": (("text", "clinical"), False, False),
    "clip_n": ((), True, False),
    "clip_n_dtc": (("text", "clinical"), True, False),
    "clip_g": ((), False, True),
    "clip_g_dtcg": (("text", "clinical", "graph"), False, True),
    "clip_ng_dtcg": (("text", "clinical", "graph"), True, True),
    "softclip": (("text",), False, False),
}


def apply_row(config, row: str, *, thresholds=None, weights=None) -> None:
  """Sets config.loss / config.model.graph for one row of configs/ablations.py (in place)."""
  if row not in ROWS:
    raise errors.ConfigError(f"unknown ablation row {row!r}; choose one of {sorted(ROWS)}")
  thresholds = dict(THRESHOLDS if thresholds is None else thresholds)
  weights = dict(WEIGHTS if weights is None else weights)
  streams, hard_negatives, graph = ROWS[row]
  loss = config.loss
  loss.hard_negatives = hard_negatives
  config.model.graph.enabled = graph
  # The text stream always contributes (with tau >= 1 its targets are the identity: InfoNCE).
  loss.thresholds = {k: INFONCE_THRESHOLD for k in ("text", "clinical", "graph")}
  loss.weights = dict(text=weights["text"] if streams else 1.0, clinical=0.0, graph=0.0)
  for stream in streams:
    loss.thresholds[stream] = thresholds[stream]
    loss.weights[stream] = weights[stream]
  loss.soft_labels = "softclip" if row == "softclip" else "dynamic"
  # Hard negatives are cleaned reports; train on cleaned reports in every row so that rows differ
  # only in the loss (and the model cannot tell negatives by format).
  config.data.text_field = "report_clean"
