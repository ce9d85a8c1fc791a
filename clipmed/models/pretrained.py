"""Pretrained encoders: load Swin and BERT weights from PyTorch checkpoints into clipmed's modules.

Public API:
  load_swin(source, variant=...) -> (SwinTransformer, params)
  load_bert(source) -> (BertEncoder, params, tokenizer)
  init_clip_params(params, model_config) -> params      # fills CLIPModel encoders from the config
  check_pretrained_available(model_config) -> None       # actionable error before compiling
  embed_phrases(text_module, params, tokenizer, phrases, ...) -> np.ndarray [N, H]

A source is a local checkpoint file, a local directory in the Hugging Face layout (config.json +
model.safetensors or pytorch_model.bin; timm hub directories with "architecture" in config.json
work too), or a Hugging Face Hub id (downloaded with huggingface_hub, cached in HF_HOME).
Weights are converted by the name tables in convert.py; nothing is ever left at random init: any
missing, unexpected or mis-shaped tensor raises with the full list.
"""

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from clipmed import errors
from clipmed.models import convert, saved
from clipmed.models.bert import BertEncoder, pool
from clipmed.models.swin import SwinTransformer

# timm variant name -> (SwinTransformer arguments, input image size).
SWIN_VARIANTS = {
    "swin_tiny_patch4_window7_224": (dict(patch_size=4, embed_dim=96, depths=(2, 2, 6, 2),
                                          num_heads=(3, 6, 12, 24), window_size=7), 224),
    "swin_small_patch4_window7_224": (dict(patch_size=4, embed_dim=96, depths=(2, 2, 18, 2),
                                           num_heads=(3, 6, 12, 24), window_size=7), 224),
    "swin_base_patch4_window7_224": (dict(patch_size=4, embed_dim=128, depths=(2, 2, 18, 2),
                                          num_heads=(4, 8, 16, 32), window_size=7), 224),
    "swin_base_patch4_window12_384": (dict(patch_size=4, embed_dim=128, depths=(2, 2, 18, 2),
                                           num_heads=(4, 8, 16, 32), window_size=12), 384),
    "swin_large_patch4_window7_224": (dict(patch_size=4, embed_dim=192, depths=(2, 2, 18, 2),
                                           num_heads=(6, 12, 24, 48), window_size=7), 224),
}
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model"]  # configs, weights, vocab files
HUB_PATTERNS_BIN = ["*.json", "*.bin", "*.txt", "*.model"]  # for repos without safetensors

Params = dict[str, Any]


# ----------------------------------------------------------------------------- sources


def resolve(source: str, what: str) -> str:
  """A local file or directory for `source`, downloading a hub id when needed.

  Args:
    source: local path or Hugging Face Hub id ("org/name").
    what: the config field that named it, for error messages (e.g. "config.model.text.init").
  """
  source = os.path.expanduser(source)
  if os.path.exists(source):
    return source
  if source.count("/") != 1 or source.startswith((".", "/")):
    raise errors.FileError(f"{what}={source!r}: no such file or directory, and it is not a "
                           "Hugging Face Hub id of the form 'org/name'.")
  try:
    from huggingface_hub import snapshot_download  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ImportError(f"{what}={source!r} is a Hub id but huggingface_hub is not installed; "
                      "`pip install huggingface_hub` or download the model and give its "
                      "directory.") from None
  failures = []
  for local_only in (True, False):  # the cache first: works offline once downloaded
    for patterns in (HUB_PATTERNS, HUB_PATTERNS_BIN):
      try:
        path = snapshot_download(source, allow_patterns=patterns, local_files_only=local_only)
      except Exception as e:  # pylint: disable=broad-except  # network, auth, missing repo
        failures.append(f"{type(e).__name__}: {e}")
        continue
      if _weights_in(path):
        return path
  raise errors.FileError(
      f"{what}={source!r} could not be loaded from the local Hugging Face cache or downloaded "
      f"({failures[-1] if failures else 'no weights found'}). On a machine with network access run "
      f"`hf download {source} --local-dir <DIR>` (or `huggingface-cli download ...`), copy <DIR> "
      f"here and set {what}=<DIR>.")


def _weights_in(directory: str) -> str | None:
  for name in WEIGHT_FILES:
    if os.path.isfile(os.path.join(directory, name)):
      return os.path.join(directory, name)
  return None


def read_weights(path: str) -> dict[str, np.ndarray]:
  """State dict of a checkpoint file or of a directory (single or sharded weights)."""
  if os.path.isfile(path):
    return convert.read_state_dict(path)
  weights = _weights_in(path)
  if weights is None:
    raise errors.FileError(f"{path} holds no weights: expected one of {WEIGHT_FILES}.")
  if weights.endswith(".index.json"):
    with open(weights) as f:
      shards = sorted(set(json.load(f)["weight_map"].values()))
    state = {}
    for shard in shards:
      state.update(convert.read_state_dict(os.path.join(path, shard)))
    return state
  return convert.read_state_dict(weights)


def read_config(path: str) -> dict[str, Any]:
  """config.json of a directory (or next to a file), {} when there is none."""
  directory = path if os.path.isdir(path) else os.path.dirname(path)
  config_path = os.path.join(directory, "config.json")
  if not os.path.isfile(config_path):
    return {}
  with open(config_path) as f:
    return json.load(f)


def _check_equal(source: str, pairs: Sequence[tuple[str, Any, Any]]) -> None:
  bad = [f"{name}: checkpoint {a!r}, expected {b!r}" for name, a, b in pairs if a != b]
  if bad:
    raise errors.ConfigError(f"{source}: unsupported or mismatched architecture:\n  " + "\n  "
                             "".join(bad))


# ----------------------------------------------------------------------------- Swin


def swin_architecture(path: str, variant: str) -> tuple[dict[str, Any], int, int]:
  """(SwinTransformer kwargs, image size, input channels) for a checkpoint source."""
  cfg = read_config(path)
  if cfg.get("model_type") == "swin":  # Hugging Face SwinModel layout
    _check_equal(path, [
        ("hidden_act", cfg.get("hidden_act", "gelu"), "gelu"),
        ("layer_norm_eps", cfg.get("layer_norm_eps", 1e-5), 1e-5),
        ("qkv_bias", cfg.get("qkv_bias", True), True),
        ("use_absolute_embeddings", cfg.get("use_absolute_embeddings", False), False)])
    kwargs = dict(patch_size=cfg["patch_size"], embed_dim=cfg["embed_dim"],
                  depths=tuple(cfg["depths"]), num_heads=tuple(cfg["num_heads"]),
                  window_size=cfg["window_size"], mlp_ratio=float(cfg.get("mlp_ratio", 4.0)))
    return kwargs, cfg.get("image_size", 224), cfg.get("num_channels", 3)
  variant = cfg.get("architecture", variant)  # timm hub directories name their variant
  if variant not in SWIN_VARIANTS:
    raise errors.ConfigError(f"unknown Swin variant {variant!r} for {path}; known: "
                             f"{sorted(SWIN_VARIANTS)}")
  kwargs, size = SWIN_VARIANTS[variant]
  return dict(kwargs), size, cfg.get("num_channels", cfg.get("in_chans", 3))


def load_swin(source: str, variant: str = "swin_tiny_patch4_window7_224"
              ) -> tuple[SwinTransformer, Params]:
  """Loads a pretrained Swin image encoder.

  Args:
    source: a timm checkpoint file (.safetensors, or .pth/.bin with torch installed), a directory
      in the Hugging Face SwinModel layout, or a Hub id (e.g.
      microsoft/swin-tiny-patch4-window7-224).
    variant: the timm architecture of a bare timm checkpoint file (see SWIN_VARIANTS); ignored when
      the source has a config.json.

  Returns:
    (module, params): module.apply({"params": params}, images [B, H, W, C] normalised as the source
    expects (ImageNet mean/std for the public checkpoints)) -> pooled features [B, C], after the
    final LayerNorm and global average pooling (no classifier).
  """
  path = resolve(source, "source")
  kwargs, size, channels = swin_architecture(path, variant)
  module = SwinTransformer(**kwargs)
  shapes = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, size, size, channels)))
  expected = {p: v.shape for p, v in convert.flatten(nn.meta.unbox(shapes)["params"]).items()}
  flat = convert.convert_swin(read_weights(path), expected, path)
  return module, convert.unflatten({p: jnp.asarray(v) for p, v in flat.items()})


# ----------------------------------------------------------------------------- BERT


def bert_architecture(path: str) -> dict[str, Any]:
  """BertEncoder kwargs from a Hugging Face config.json."""
  cfg = read_config(path)
  if not cfg:
    raise errors.FileError(f"{path}: a BERT source must be a directory with config.json "
                           "(the Hugging Face layout).")
  _check_equal(path, [
      # Early checkpoints (e.g. Bio_ClinicalBERT) predate the model_type field.
      ("model_type", cfg.get("model_type", "bert"), "bert"),
      ("hidden_act", cfg.get("hidden_act", "gelu"), "gelu"),
      ("layer_norm_eps", cfg.get("layer_norm_eps", 1e-12), 1e-12),
      ("position_embedding_type", cfg.get("position_embedding_type", "absolute"), "absolute")])
  return dict(vocab_size=cfg["vocab_size"], hidden_size=cfg["hidden_size"],
              num_layers=cfg["num_hidden_layers"], num_heads=cfg["num_attention_heads"],
              intermediate_size=cfg["intermediate_size"],
              max_position_embeddings=cfg["max_position_embeddings"],
              type_vocab_size=cfg.get("type_vocab_size", 2))


def load_tokenizer(path: str):
  """The directory's tokenizer (AutoTokenizer; a bare vocab.txt gives a BertTokenizer)."""
  import transformers  # pylint: disable=g-import-not-at-top
  try:
    return transformers.AutoTokenizer.from_pretrained(path)
  except (OSError, ValueError, KeyError) as e:
    if not os.path.isfile(os.path.join(path, "vocab.txt")):
      raise errors.FileError(f"{path}: no tokenizer files (vocab.txt / tokenizer.json) next to "
                             f"the BERT weights ({e}).") from e
    return transformers.BertTokenizer.from_pretrained(path)


def load_bert(source: str) -> tuple[BertEncoder, Params, Any]:
  """Loads a pretrained BERT text encoder and its tokenizer.

  Args:
    source: a Hugging Face directory (config.json, model.safetensors or pytorch_model.bin, vocab
      files) or a Hub id such as emilyalsentzer/Bio_ClinicalBERT.

  Returns:
    (module, params, tokenizer): module.apply({"params": params}, input_ids, attention_mask)
    -> last hidden state [B, L, H] (dropout off unless train=True); tokenizer is a transformers
    tokenizer.
  """
  path = resolve(source, "source")
  cfg = read_config(path)
  module = BertEncoder(**bert_architecture(path), dropout=cfg.get("hidden_dropout_prob", 0.1))
  ids = jnp.zeros((1, 2), jnp.int32)
  shapes = jax.eval_shape(module.init, jax.random.key(0), ids, ids)
  expected = {p: v.shape for p, v in convert.flatten(nn.meta.unbox(shapes)["params"]).items()}
  flat = convert.convert_bert(read_weights(path), expected, path)
  params = convert.unflatten({p: jnp.asarray(v) for p, v in flat.items()})
  return module, params, load_tokenizer(path)


# ----------------------------------------------------------------------------- CLIP


def _replace_subtree(subtree: Mapping, loaded: Mapping[convert.Path, np.ndarray],
                     what: str, source: str) -> dict:
  """Puts `loaded` arrays into a (possibly boxed, possibly sharded) params subtree."""
  flat = convert.flatten(subtree)
  missing = sorted(set(flat) - set(loaded))
  if missing:  # convert.assemble already guarantees this; keep the invariant explicit
    raise errors.ConfigError(f"{what}={source}: no weights for {['/'.join(p) for p in missing]}")
  out = {}
  for path, old in flat.items():
    value = loaded[path]
    target = old.unbox() if isinstance(old, nn.meta.AxisMetadata) else old
    if tuple(target.shape) != value.shape:
      raise errors.ConfigError(f"{what}={source}: {'/'.join(path)} has shape {value.shape}, the "
                               "model "
                               f"expects {tuple(target.shape)}")
    value = np.asarray(value, dtype=target.dtype)
    if isinstance(target, jax.Array):  # keep the placement (host numpy in: works multi-process)
      new = jax.device_put(value, target.sharding)
    else:
      new = jnp.asarray(value)
    out[path] = old.replace_boxed(new) if isinstance(old, nn.meta.AxisMetadata) else new
  return convert.unflatten(out)


def _expected_shapes(subtree: Mapping) -> dict[convert.Path, tuple[int, ...]]:
  return {p: tuple(v.shape) for p, v in convert.flatten(nn.meta.unbox(subtree)).items()}


def init_clip_params(params: Params, model_config: ml_collections.ConfigDict) -> Params:
  """Loads the pretrained encoders named by config.model.image.init / text.init into CLIP params.

  Args:
    params: a CLIPModel's params (the "params" collection, boxed or not, host or sharded).
    model_config: config.model. An empty `init` leaves that encoder as it is.

  Returns:
    params with params["image_encoder"] / params["text_encoder"] replaced by the checkpoint's
    weights (same structure, dtypes, boxes and shardings).

  Raises:
    ValueError: naming every missing, unexpected or mis-shaped tensor, or an architecture field
      of the checkpoint's config.json that differs from config.model.
  """
  params = dict(params)
  if model_config.get("init"):
    params = _init_from_export(params, model_config.init)
  if model_config.image.init:
    source = model_config.image.init
    path = resolve(source, "config.model.image.init")
    if read_config(path):  # a bare timm file has no config: the shape checks below decide
      arch, _, _ = swin_architecture(path, "")
      cfg = model_config.image
      _check_equal(f"config.model.image.init={source}", [
          (f"image.{k}", v, tuple(cfg[k]) if isinstance(v, tuple) else cfg[k])
          for k, v in arch.items()])
    loaded = convert.convert_swin(read_weights(path), _expected_shapes(params["image_encoder"]),
                                  path)
    params["image_encoder"] = _replace_subtree(params["image_encoder"], loaded,
                                               "config.model.image.init", source)
  if model_config.text.init:
    source = model_config.text.init
    path = resolve(source, "config.model.text.init")
    arch = bert_architecture(path)
    cfg = model_config.text
    _check_equal(f"config.model.text.init={source}",
                 [(f"text.{k}", arch[k], cfg[k]) for k in arch if k != "vocab_size"])
    loaded = convert.convert_bert(read_weights(path), _expected_shapes(params["text_encoder"]),
                                  path)
    params["text_encoder"] = _replace_subtree(params["text_encoder"], loaded,
                                              "config.model.text.init", source)
  return params


def wants_init(model_config: ml_collections.ConfigDict) -> bool:
  """Whether config.model names any weights to start from (init, image.init or text.init)."""
  return bool(model_config.get("init") or model_config.image.init or model_config.text.init)


def _init_from_export(params: Params, source: str) -> Params:
  """Every CLIP parameter from a clipmed export directory (config.model.init)."""
  loaded = {tuple(name.split("/")): value
            for name, value in saved.flatten_params(saved.read_params(source)).items()}
  unexpected = sorted("/".join(p) for p in set(loaded) - set(convert.flatten(params)))
  if unexpected:
    raise errors.ConfigError(f"config.model.init={source}: the export has parameters this "
                             f"config.model does not ({unexpected[:5]}); use the export's model "
                             f"settings ({os.path.join(source, saved.CONFIG)})")
  return _replace_subtree(params, loaded, "config.model.init", source)


def check_pretrained_available(model_config: ml_collections.ConfigDict) -> None:
  """Raises an actionable error if a checkpoint named by config.model cannot be found or fetched.

  Call it before compiling anything: it checks that config.model.init is a clipmed export,
  resolves (and downloads, when online) image.init and text.init, and checks that each holds
  weights.
  """
  if model_config.get("init"):
    if not saved.is_export(os.path.expanduser(model_config.init)):
      raise errors.FileError(f"config.model.init={model_config.init!r} is not a clipmed export "
                             f"(a directory with {saved.CONFIG} and {saved.WEIGHTS}); write one "
                             "with `python -m clipmed.export --workdir=... --output=...`")
    if model_config.image.init or model_config.text.init:
      raise errors.ConfigError("config.model.init (all weights from an export) and "
                               "config.model.image.init / text.init exclude each other; set one")
  for field, source in (("config.model.image.init", model_config.image.init),
                        ("config.model.text.init", model_config.text.init)):
    if not source:
      continue
    path = resolve(source, field)
    if os.path.isdir(path) and _weights_in(path) is None:
      raise errors.FileError(f"{field}={source!r}: directory {path} holds no weights (expected "
                             f"one of {WEIGHT_FILES}).")
    if field.endswith("text.init") and not os.path.isdir(path):
      raise errors.FileError(f"{field}={source!r} must be a directory with config.json, the "
                             "weights and the tokenizer files (Hugging Face layout).")


# ----------------------------------------------------------------------------- phrases


def embed_phrases(text_module: nn.Module, params: Params, tokenizer: Any,
                  phrases: Sequence[str], *, max_length: int = 16, batch_size: int = 256,
                  pooling: str = "mean") -> np.ndarray:
  """Embeds short phrases (e.g. graph entities) with a text encoder.

  Args:
    text_module: a BertEncoder (anything mapping (input_ids, attention_mask) -> [B, L, H]).
    params: its params (as returned by load_bert; a {"params": ...} dict is accepted too).
    tokenizer: the matching transformers tokenizer.
    phrases: N strings.
    max_length: tokens per phrase, including [CLS] and [SEP]; longer phrases are truncated.
    batch_size: phrases per forward pass (the last batch is padded, so one compilation).
    pooling: "mean" over real tokens or "cls".

  Returns:
    float32 [N, H].
  """
  if isinstance(params, Mapping) and set(params) == {"params"}:
    params = params["params"]

  @jax.jit
  def apply(params, input_ids, attention_mask):
    hidden = text_module.apply({"params": params}, input_ids, attention_mask)  # [B, L, H]
    return pool(hidden, attention_mask, pooling)  # [B, H]

  out = []
  for start in range(0, len(phrases), batch_size):
    chunk = list(phrases[start:start + batch_size])
    enc = tokenizer(chunk + [""] * (batch_size - len(chunk)), padding="max_length",
                    truncation=True, max_length=max_length, return_tensors="np")
    pooled = apply(params, jnp.asarray(enc["input_ids"], jnp.int32),
                   jnp.asarray(enc["attention_mask"], jnp.int32))
    out.append(np.asarray(pooled, np.float32)[:len(chunk)])
  if not out:
    return np.zeros((0, text_module.hidden_size), np.float32)
  return np.concatenate(out, axis=0)

