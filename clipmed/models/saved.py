"""The on-disk layout of an exported clipmed model, written by `python -m clipmed.export`.

    EXPORT_DIR/
      model.safetensors       the CLIPModel parameters, flat keys "image_encoder/.../kernel"
      config.json             {"format": "clipmed", "format_version": 1, "step": N,
                               "model": config.model with text.vocab_size filled in}
      preprocessing.json      how an image file becomes a model input (PREPROCESSING_KEYS)
      tokenizer/              the run's transformers fast tokenizer (save_pretrained files)
      prompts/<name>.json     the zero-shot prompt sets (clipmed/evaluators/prompt_sets.py format)
      training_config.json    the full training config, for provenance
      results.json            the run's evaluation results, when it had any
      decision_offsets/<eval>/<dataset>.npz
                              the yes/no offsets each evaluation of this step fitted (classes,
                              decision_offset, step, prompt_sha256; clipmed.predict's
                              evaluation_offsets reads them), when the workdir had any
      README.md               the model card

Read by `clipmed.predict.load` (inference) and by config.model.init (further training); neither
needs the training workdir or its config. Only numpy, safetensors and json here, no JAX.
"""

import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from clipmed import errors

FORMAT = "clipmed"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
PREPROCESSING = "preprocessing.json"
TOKENIZER = "tokenizer"
PROMPTS = "prompts"
TRAINING_CONFIG = "training_config.json"
RESULTS = "results.json"
DECISIONS = "decision_offsets"
CARD = "README.md"
# preprocessing.json: source_max_size is the longest side dataset preparation resized to (an input
# file goes through the same resize first); the rest are config.data's values of the run.
PREPROCESSING_KEYS = ("source_max_size", "image_size", "channels", "mean", "std",
                      "max_text_length")
_SEP = "/"


def flatten_params(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Nested parameter dict -> {"a/b/c": float array} (host numpy copies)."""
  out = {}

  def visit(prefix: str, node: Any) -> None:
    if isinstance(node, Mapping):
      for key, value in node.items():
        if _SEP in str(key):
          raise ValueError(f"parameter name {key!r} contains {_SEP!r}")
        visit(f"{prefix}{key}{_SEP}", value)
    else:
      out[prefix[:-1]] = np.asarray(node)
  visit("", params)
  return out


def unflatten_params(flat: Mapping[str, np.ndarray]) -> dict[str, Any]:
  """The inverse of `flatten_params`."""
  out: dict[str, Any] = {}
  for name, value in flat.items():
    *parents, leaf = name.split(_SEP)
    node = out
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = value
  return out


def is_export(path: str) -> bool:
  """Whether `path` is a directory written by clipmed.export."""
  return os.path.isfile(os.path.join(path, CONFIG)) and os.path.isfile(os.path.join(path, WEIGHTS))


def _read_json(path: str, what: str) -> dict[str, Any]:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except FileNotFoundError:
    raise errors.FileError(f"{path} is missing: {what} is not a complete clipmed export; export "
                           "it again with `python -m clipmed.export`") from None
  except json.JSONDecodeError as e:
    raise errors.FileError(f"{path} is not valid JSON (line {e.lineno}: {e.msg}); export the "
                           "model again with `python -m clipmed.export`") from None


def read_config(export_dir: str) -> dict[str, Any]:
  """config.json of an export, checked: {"format", "format_version", "step", "model"}."""
  config = _read_json(os.path.join(export_dir, CONFIG), export_dir)
  if config.get("format") != FORMAT or "model" not in config:
    raise errors.FileError(f"{os.path.join(export_dir, CONFIG)} is not a clipmed export config "
                           "(no \"format\": \"clipmed\"); point at a directory written by "
                           "`python -m clipmed.export`")
  if int(config.get("format_version", 0)) > FORMAT_VERSION:
    raise errors.FileError(f"{export_dir} has export format version {config['format_version']}; "
                           f"this clipmed reads up to {FORMAT_VERSION}: update clipmed")
  return config


def read_preprocessing(export_dir: str) -> dict[str, Any]:
  values = _read_json(os.path.join(export_dir, PREPROCESSING), export_dir)
  missing = [k for k in PREPROCESSING_KEYS if k not in values]
  if missing:
    raise errors.FileError(f"{os.path.join(export_dir, PREPROCESSING)} lacks {missing}; export "
                           "the model again with `python -m clipmed.export`")
  return {k: values[k] for k in PREPROCESSING_KEYS}


def write_params(path: str, params: Mapping[str, Any]) -> None:
  """Writes the parameters as safetensors; 0-d arrays (the logit scale) are stored as [1] and
  listed in the metadata, since safetensors readers disagree on 0-d tensors."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  flat = flatten_params(params)
  scalars = sorted(k for k, v in flat.items() if v.ndim == 0)
  save_file({k: np.ascontiguousarray(v.reshape(-1) if v.ndim == 0 else v)
             for k, v in flat.items()}, path,
            metadata={"format": FORMAT, "scalars": json.dumps(scalars)})


def read_params(export_dir: str) -> dict[str, Any]:
  """The nested parameters of an export (numpy arrays)."""
  from safetensors import SafetensorError, safe_open  # pylint: disable=g-import-not-at-top
  path = os.path.join(export_dir, WEIGHTS)
  if not os.path.isfile(path):
    raise errors.FileError(f"{path} is missing; export the model again with "
                           "`python -m clipmed.export`")
  try:
    with safe_open(path, framework="np") as f:
      scalars = set(json.loads((f.metadata() or {}).get("scalars", "[]")))
      flat = {k: (f.get_tensor(k).reshape(()) if k in scalars else f.get_tensor(k))
              for k in f.keys()}
  except (SafetensorError, OSError, ValueError) as e:
    raise errors.FileError(f"{path} cannot be read ({e}); the file is truncated or corrupt: "
                           "export or download it again") from None
  return unflatten_params(flat)
