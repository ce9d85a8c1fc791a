"""Reading PyTorch checkpoints and renaming their tensors into clipmed's Flax parameter trees.

Three key layouts are understood, each by an explicit rule table below:
  * Hugging Face SwinModel / SwinForImageClassification ("embeddings.*", "encoder.layers.*"),
    both the on-disk names (attention.self.query, intermediate.dense, ...) and the renamed
    in-memory names of transformers >= 5 (attention.q_proj, mlp.fc1, ...);
  * timm SwinTransformer ("patch_embed.*", "layers.N.blocks.M.attn.qkv", ...), both the timm >= 0.9
    layout (patch merging at the start of stage N >= 1) and the original Microsoft layout
    (merging at the end of stage N, detected by "layers.0.downsample.*");
  * Hugging Face BertModel (optionally under "bert.", with LayerNorm gamma/beta from TF ports).
Heads and buffers that the encoders do not use (classifiers, poolers, MLM heads, index buffers) are
listed in IGNORED_* and skipped on purpose; every other tensor must map to exactly one parameter,
and every parameter must receive one tensor, or `assemble` raises with the full list.
"""

import os
import re
from collections.abc import Callable, Mapping

import numpy as np

from clipmed import errors

Path = tuple[str, ...]

# Tensor kinds: how a PyTorch tensor becomes a Flax parameter.
LINEAR, NORM, CONV, EMBED, PARAM, QKV = "linear", "norm", "conv", "embed", "param", "qkv"
SUFFIXES = {  # module kind -> {torch parameter suffix: flax parameter name}
    LINEAR: {"weight": "kernel", "bias": "bias"},
    QKV: {"weight": "kernel", "bias": "bias"},
    NORM: {"weight": "scale", "bias": "bias", "gamma": "scale", "beta": "bias"},
    CONV: {"weight": "kernel", "bias": "bias"},
    EMBED: {"weight": "embedding"},
}

_B = r"layers\.(\d+)\.blocks\.(\d+)\."  # timm / HF block prefix (HF adds "encoder.")

# (regex on the module name or, for PARAM, on the whole key; target module path; kind). The target
# is a function of the regex match so stage/block numbers can be renumbered.
Rule = tuple[str, Callable[[re.Match], str], str]

HF_SWIN_RULES: list[Rule] = [
    (r"embeddings\.patch_embeddings\.projection", lambda m: "patch_embed", CONV),
    (r"embeddings\.norm", lambda m: "patch_norm", NORM),
    (r"encoder\." + _B + r"layernorm_before", lambda m: f"stage{m[1]}_block{m[2]}/norm1", NORM),
    (r"encoder\." + _B + r"layernorm_after", lambda m: f"stage{m[1]}_block{m[2]}/norm2", NORM),
    (r"encoder\." + _B + r"attention\.(?:self\.query|q_proj)",
     lambda m: f"stage{m[1]}_block{m[2]}/attn/query", LINEAR),
    (r"encoder\." + _B + r"attention\.(?:self\.key|k_proj)",
     lambda m: f"stage{m[1]}_block{m[2]}/attn/key", LINEAR),
    (r"encoder\." + _B + r"attention\.(?:self\.value|v_proj)",
     lambda m: f"stage{m[1]}_block{m[2]}/attn/value", LINEAR),
    (r"encoder\." + _B + r"attention\.(?:output\.dense|o_proj)",
     lambda m: f"stage{m[1]}_block{m[2]}/attn/out", LINEAR),
    (r"encoder\." + _B + r"attention\.(?:self|relative_position_bias)\."
     r"relative_position_bias_table",
     lambda m: f"stage{m[1]}_block{m[2]}/attn/relative_position_bias_table", PARAM),
    (r"encoder\." + _B + r"(?:intermediate\.dense|mlp\.fc1)",
     lambda m: f"stage{m[1]}_block{m[2]}/mlp/fc1", LINEAR),
    (r"encoder\." + _B + r"(?:output\.dense|mlp\.fc2)",
     lambda m: f"stage{m[1]}_block{m[2]}/mlp/fc2", LINEAR),
    (r"encoder\.layers\.(\d+)\.downsample\.norm", lambda m: f"stage{m[1]}_merge/norm", NORM),
    (r"encoder\.layers\.(\d+)\.downsample\.reduction", lambda m: f"stage{m[1]}_merge/reduction",
     LINEAR),
    (r"layernorm", lambda m: "norm", NORM),
]
IGNORED_HF_SWIN = (r"classifier\..*", r".*relative_position_index", r".*attn_mask",
                   r"pooler\..*")


def timm_swin_rules(merge_at_stage_end: bool) -> list[Rule]:
  """timm rules; `merge_at_stage_end` for the original layout (layers.0.downsample exists)."""
  shift = 0 if merge_at_stage_end else 1
  return [
      (r"patch_embed\.proj", lambda m: "patch_embed", CONV),
      (r"patch_embed\.norm", lambda m: "patch_norm", NORM),
      (_B + r"norm1", lambda m: f"stage{m[1]}_block{m[2]}/norm1", NORM),
      (_B + r"norm2", lambda m: f"stage{m[1]}_block{m[2]}/norm2", NORM),
      (_B + r"attn\.qkv", lambda m: f"stage{m[1]}_block{m[2]}/attn", QKV),
      (_B + r"attn\.proj", lambda m: f"stage{m[1]}_block{m[2]}/attn/out", LINEAR),
      (_B + r"attn\.relative_position_bias_table",
       lambda m: f"stage{m[1]}_block{m[2]}/attn/relative_position_bias_table", PARAM),
      (_B + r"mlp\.fc1", lambda m: f"stage{m[1]}_block{m[2]}/mlp/fc1", LINEAR),
      (_B + r"mlp\.fc2", lambda m: f"stage{m[1]}_block{m[2]}/mlp/fc2", LINEAR),
      (r"layers\.(\d+)\.downsample\.norm",
       lambda m: f"stage{int(m[1]) - shift}_merge/norm", NORM),
      (r"layers\.(\d+)\.downsample\.reduction",
       lambda m: f"stage{int(m[1]) - shift}_merge/reduction", LINEAR),
      (r"norm", lambda m: "norm", NORM),
  ]


IGNORED_TIMM_SWIN = (r"head\..*", r".*relative_position_index", r".*attn_mask")

_L = r"encoder\.layer\.(\d+)\."
HF_BERT_RULES: list[Rule] = [
    (r"embeddings\.word_embeddings", lambda m: "word_embeddings", EMBED),
    (r"embeddings\.position_embeddings", lambda m: "position_embeddings", EMBED),
    (r"embeddings\.token_type_embeddings", lambda m: "token_type_embeddings", EMBED),
    (r"embeddings\.LayerNorm", lambda m: "embeddings_norm", NORM),
    (_L + r"attention\.self\.query", lambda m: f"layer{m[1]}/attention/query", LINEAR),
    (_L + r"attention\.self\.key", lambda m: f"layer{m[1]}/attention/key", LINEAR),
    (_L + r"attention\.self\.value", lambda m: f"layer{m[1]}/attention/value", LINEAR),
    (_L + r"attention\.output\.dense", lambda m: f"layer{m[1]}/attention/out", LINEAR),
    (_L + r"attention\.output\.LayerNorm", lambda m: f"layer{m[1]}/attention_norm", NORM),
    (_L + r"intermediate\.dense", lambda m: f"layer{m[1]}/intermediate", LINEAR),
    (_L + r"output\.dense", lambda m: f"layer{m[1]}/output", LINEAR),
    (_L + r"output\.LayerNorm", lambda m: f"layer{m[1]}/output_norm", NORM),
]
IGNORED_HF_BERT = (r"pooler\..*", r"cls\..*", r"embeddings\.position_ids", r"lm_head\..*",
                   r"classifier\..*", r"qa_outputs\..*")


# ----------------------------------------------------------------------------- reading


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """Reads a checkpoint file into {name: float32 numpy array}.

  .safetensors files are read with safetensors.numpy (no torch needed); .bin / .pth / .pt files need
  torch. A checkpoint that wraps its weights under "model" or "state_dict" is unwrapped.
  """
  if not os.path.isfile(path):
    raise errors.FileError(f"checkpoint file {path} does not exist.")
  if path.endswith(".safetensors"):
    from safetensors import safe_open  # pylint: disable=g-import-not-at-top
    out = {}
    with safe_open(path, framework="numpy") as f:
      for key in f.keys():
        out[key] = f.get_tensor(key)
    return {k: _float32(v, path, k) for k, v in out.items()}
  if path.endswith((".bin", ".pth", ".pt")):
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError:
      raise ImportError(
          f"{path} is a PyTorch checkpoint and torch is not installed. Either "
          "`pip install torch` (the CPU build is enough), or convert it once to safetensors "
          "(python -c \"import torch, safetensors.torch as st; "
          f"st.save_file(torch.load('{path}', map_location='cpu'), 'model.safetensors')\") and "
          "point the config at the .safetensors file.") from None
    state = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("model", "state_dict"):
      if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
        state = state[wrapper]
    return {k: _float32(v.detach().float().numpy(), path, k) for k, v in state.items()
            if hasattr(v, "detach")}
  raise errors.FileError(f"unsupported checkpoint file {path}: expected .safetensors, .bin, .pth "
                         "or .pt")


def _float32(value: np.ndarray, path: str, key: str) -> np.ndarray:
  value = np.asarray(value)
  if value.dtype.kind in "iub":  # integer buffers (position ids, indices): keep, they are ignored
    return value
  if value.dtype.kind not in "fV" and value.dtype.name != "bfloat16":
    raise ValueError(f"{path}: tensor {key} has unsupported dtype {value.dtype}")
  return value.astype(np.float32)


# ----------------------------------------------------------------------------- renaming


def rename(state: Mapping[str, np.ndarray], rules: list[Rule], ignored: tuple[str, ...],
           strip_prefixes: tuple[str, ...] = ()
           ) -> tuple[dict[Path, tuple[str, np.ndarray, str]], list[str]]:
  """Applies a rule table to a state dict.

  Returns:
    ({flax path: (source key, array in PyTorch orientation, kind)}, unexpected source keys).
    Orientation and reshape happen in `assemble`, which knows the target shapes.
  """
  out: dict[Path, tuple[str, np.ndarray, str]] = {}
  unexpected = []
  for key, value in state.items():
    name = key
    for prefix in strip_prefixes:
      if name.startswith(prefix):
        name = name[len(prefix):]
        break
    if any(re.fullmatch(p, name) for p in ignored):
      continue
    targets = _match(name, value, rules)
    if targets is None:
      unexpected.append(key)
      continue
    for path, array, kind in targets:
      if path in out:
        raise ValueError(f"checkpoint tensors {out[path][0]} and {key} both map to "
                         f"{'/'.join(path)}; the checkpoint mixes two layouts.")
      out[path] = (key, array, kind)
  return out, unexpected


def _match(name: str, value: np.ndarray, rules: list[Rule]):
  for pattern, target, kind in rules:
    if kind == PARAM:
      m = re.fullmatch(pattern, name)
      if m:
        return [(tuple(target(m).split("/")), value, kind)]
      continue
    m = re.fullmatch(pattern + r"\.(\w+)", name)
    if not m or m[m.lastindex] not in SUFFIXES[kind]:
      continue
    module = tuple(target(m).split("/"))
    param = SUFFIXES[kind][m[m.lastindex]]
    if kind == QKV:  # fused [3C, C] / [3C]: split into query, key, value
      if value.shape[0] % 3:
        return [(module + ("qkv", param), value, kind)]  # reported as mis-shaped
      parts = np.split(value, 3, axis=0)
      return [(module + (n, param), p, LINEAR) for n, p in zip(("query", "key", "value"), parts)]
    return [(module + (param,), value, kind)]
  return None


def _to_flax(array: np.ndarray, kind: str, param: str, shape: tuple[int, ...]) -> np.ndarray | None:
  """Orients and reshapes one tensor to `shape`, or None when it cannot fit."""
  if kind == CONV and param == "kernel":
    array = array.transpose(2, 3, 1, 0)  # [out, in, kh, kw] -> [kh, kw, in, out]
  elif kind == LINEAR and param == "kernel":
    if array.ndim != 2:
      return None
    out_dim, in_dim = array.shape
    # Flax DenseGeneral kernels are [*input axes, *feature axes]: find the split.
    if not any(int(np.prod(shape[:k])) == in_dim and int(np.prod(shape[k:])) == out_dim
               for k in range(1, len(shape))):
      return None
    return array.T.reshape(shape)
  if array.shape == tuple(shape):
    return array
  if kind in (LINEAR, NORM, CONV) and param == "bias" and array.ndim == 1 and array.size == int(
      np.prod(shape)):
    return array.reshape(shape)  # per-head biases [h, d]
  return None


def assemble(renamed: dict[Path, tuple[str, np.ndarray, str]], unexpected: list[str],
             expected: Mapping[Path, tuple[int, ...]], source: str) -> dict[Path, np.ndarray]:
  """Matches renamed tensors to the expected parameter shapes.

  Raises:
    ValueError: listing every missing parameter, unexpected tensor and shape mismatch by name.
  """
  out, problems = {}, []
  for path, shape in expected.items():
    if path not in renamed:
      problems.append(f"missing: {'/'.join(path)} {tuple(shape)} (no tensor in the checkpoint)")
      continue
    key, array, kind = renamed[path]
    value = _to_flax(array, kind, path[-1], tuple(shape))
    if value is None:
      problems.append(f"shape mismatch: {key} {tuple(array.shape)} -> {'/'.join(path)} expects "
                      f"{tuple(shape)}")
      continue
    out[path] = value.astype(np.float32)
  for path in sorted(set(renamed) - set(expected)):
    key, array, _ = renamed[path]
    problems.append(f"unexpected: {key} {tuple(array.shape)} (would be {'/'.join(path)}, which "
                    "the model does not have)")
  problems += [f"unexpected: {key} (no rule maps this tensor)" for key in unexpected]
  if problems:
    raise errors.ConfigError(f"{source}: the checkpoint does not match the model "
                             f"({len(problems)} problems):\n  " + "\n  ".join(problems) +
                             "\nCheck that the model config (depths, heads, widths, window, vocab "
                             "size, image size) matches the checkpoint.")
  return out


def flatten(tree: Mapping, prefix: Path = ()) -> dict[Path, object]:
  """{"a": {"b": x}} -> {("a", "b"): x} (stops at non-mapping leaves)."""
  out = {}
  for k, v in tree.items():
    if isinstance(v, Mapping):
      out.update(flatten(v, prefix + (k,)))
    else:
      out[prefix + (k,)] = v
  return out


def unflatten(flat: Mapping[Path, object]) -> dict:
  out: dict = {}
  for path, value in flat.items():
    node = out
    for k in path[:-1]:
      node = node.setdefault(k, {})
    node[path[-1]] = value
  return out


def swin_layout(state: Mapping[str, np.ndarray]) -> str:
  """"hf", "timm" or "timm_original" from the key names."""
  keys = set(state)
  if any(k.startswith(("embeddings.", "swin.embeddings.")) for k in keys):
    return "hf"
  if "patch_embed.proj.weight" in keys:
    return "timm_original" if "layers.0.downsample.reduction.weight" in keys else "timm"
  raise errors.FileError("the checkpoint has neither Hugging Face Swin keys (embeddings.*) nor "
                         "timm keys "
                         f"(patch_embed.proj.weight); first keys: {sorted(keys)[:5]}")


def convert_swin(state: Mapping[str, np.ndarray], expected: Mapping[Path, tuple[int, ...]],
                 source: str) -> dict[Path, np.ndarray]:
  """Swin state dict (any supported layout) -> {flax path: array} matching `expected`."""
  layout = swin_layout(state)
  if layout == "hf":
    renamed, unexpected = rename(state, HF_SWIN_RULES, IGNORED_HF_SWIN, ("swin.",))
  else:
    renamed, unexpected = rename(state, timm_swin_rules(layout == "timm_original"),
                                 IGNORED_TIMM_SWIN)
  return assemble(renamed, unexpected, expected, source)


def convert_bert(state: Mapping[str, np.ndarray], expected: Mapping[Path, tuple[int, ...]],
                 source: str) -> dict[Path, np.ndarray]:
  """BERT state dict (optionally under "bert.") -> {flax path: array} matching `expected`."""
  renamed, unexpected = rename(state, HF_BERT_RULES, IGNORED_HF_BERT, ("bert.",))
  return assemble(renamed, unexpected, expected, source)
