"""Optional CheXbert labeler (Smit et al., 2020) on the project's Flax BERT.

For users who have the CheXbert checkpoint (chexbert.pth, a PyTorch state dict of BERT-base plus
14 linear heads on the [CLS] state) and the bert-base-uncased vocabulary on disk. The rule labeler
(clipmed.report.labeler) stays the default; nothing here downloads anything.

    labeler = CheXbertLabeler.from_checkpoint("chexbert.pth", "path/to/bert-base-uncased")
    labels = labeler.label(texts)          # [N, 14] in CheXpert order, labeler convention

Heavy imports (jax, flax, torch, transformers) happen inside the functions that need them.
"""

from collections.abc import Mapping, Sequence
import dataclasses
import os
import re
from typing import Any

import numpy as np

from clipmed.errors import UserError
from clipmed.report import chexpert
from clipmed.report import sections

# Head order of the CheXbert checkpoint (its constants.CONDITIONS): heads 0..12 have 4 classes
# (blank, positive, negative, uncertain), head 13 (No Finding) has 2 (blank, positive).
CHEXBERT_CONDITIONS = (
    "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
    "Pleural Other", "Fracture", "Support Devices", "No Finding")
# Class index -> labeler convention.
CLASS_VALUES = (np.nan, chexpert.POSITIVE, chexpert.NEGATIVE, chexpert.UNCERTAIN)
MAX_TOKENS = 512

_LAYER_RE = re.compile(r"^encoder\.layer\.(\d+)\.(.+)$")
# Hugging Face BERT sub-module name -> BertEncoder parameter path, within a layer.
_LAYER_NAMES = {
    "attention.self.query": ("attention", "query"),
    "attention.self.key": ("attention", "key"),
    "attention.self.value": ("attention", "value"),
    "attention.output.dense": ("attention", "out"),
    "attention.output.LayerNorm": ("attention_norm",),
    "intermediate.dense": ("intermediate",),
    "output.dense": ("output",),
    "output.LayerNorm": ("output_norm",),
}
_EMBEDDING_NAMES = {
    "embeddings.word_embeddings": ("word_embeddings",),
    "embeddings.position_embeddings": ("position_embeddings",),
    "embeddings.token_type_embeddings": ("token_type_embeddings",),
    "embeddings.LayerNorm": ("embeddings_norm",),
}


def _set(tree: dict, path: Sequence[str], value: np.ndarray) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  if path[-1] in tree:
    raise ValueError(f"parameter {'/'.join(path)} given twice in the checkpoint")
  tree[path[-1]] = value


def convert_state_dict(state_dict: Mapping[str, Any], *, num_heads: int
                       ) -> tuple[dict, list[tuple[np.ndarray, np.ndarray]]]:
  """Maps a CheXbert (or plain Hugging Face BERT) state dict to BertEncoder parameters.

  Args:
    state_dict: parameter name -> array (torch tensors or numpy). A "module." prefix (from
      DataParallel) and a "bert." prefix are accepted; the pooler is unused and dropped.
    num_heads: attention heads of the model (BERT-base: 12).

  Returns:
    (params for clipmed.models.bert.BertEncoder, [(kernel [H, C], bias [C]) per linear head]).
  """
  params: dict = {}
  heads: dict[int, dict[str, np.ndarray]] = {}
  for name, value in state_dict.items():
    array = np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value,
                       dtype=np.float32)
    name = name.removeprefix("module.").removeprefix("bert.")
    head = re.match(r"^linear_heads\.(\d+)\.(weight|bias)$", name)
    if head:
      heads.setdefault(int(head.group(1)), {})[head.group(2)] = array
      continue
    if name.startswith("pooler.") or name.endswith("position_ids"):
      continue
    module, _, leaf = name.rpartition(".")
    layer = _LAYER_RE.match(module)
    if layer:
      index, sub = layer.groups()
      if sub not in _LAYER_NAMES:
        raise ValueError(f"unexpected BERT parameter {name!r} in the checkpoint")
      path = (f"layer{index}",) + _LAYER_NAMES[sub]
    elif module in _EMBEDDING_NAMES:
      path = _EMBEDDING_NAMES[module]
    else:
      raise ValueError(f"unexpected BERT parameter {name!r} in the checkpoint")
    _set(params, path + (_leaf_name(path, leaf),), _convert(path, leaf, array, num_heads))
  head_list = []
  for k in sorted(heads):
    if set(heads[k]) != {"weight", "bias"}:
      raise ValueError(f"linear head {k} lacks its weight or bias in the checkpoint")
    head_list.append((heads[k]["weight"].T.copy(), heads[k]["bias"]))
  return params, head_list


def _leaf_name(path: Sequence[str], leaf: str) -> str:
  if path[-1].endswith("embeddings"):
    return "embedding"
  if path[-1].endswith("_norm"):
    return {"weight": "scale", "gamma": "scale", "bias": "bias", "beta": "bias"}[leaf]
  return {"weight": "kernel", "bias": "bias"}[leaf]


def _convert(path: Sequence[str], leaf: str, array: np.ndarray, num_heads: int) -> np.ndarray:
  """PyTorch Linear weights [out, in] -> Flax kernels, split per attention head where needed."""
  if path[-1].endswith("embeddings") or path[-1].endswith("_norm"):
    return array
  if path[-1] in ("query", "key", "value"):
    hidden = array.shape[0]
    if leaf == "weight":
      return array.T.reshape(array.shape[1], num_heads, hidden // num_heads)
    return array.reshape(num_heads, hidden // num_heads)
  if path[-1] == "out" and leaf == "weight":
    hidden = array.shape[0]
    return array.T.reshape(num_heads, hidden // num_heads, hidden)
  return array.T.copy() if leaf == "weight" else array


def logits_to_labels(logits: Sequence[np.ndarray]) -> np.ndarray:
  """CheXbert head outputs -> labeler-convention labels in CheXpert order.

  Args:
    logits: 14 arrays in CHEXBERT_CONDITIONS order, [N, 4] (or [N, 2] for No Finding).

  Returns:
    [N, 14] float32.
  """
  n = logits[0].shape[0]
  out = np.full((n, chexpert.NUM_CATEGORIES), np.nan, dtype=np.float32)
  for name, head in zip(CHEXBERT_CONDITIONS, logits):
    classes = np.argmax(np.asarray(head), axis=-1)
    out[:, chexpert.INDEX[name]] = np.take(np.asarray(CLASS_VALUES, np.float32), classes)
  return out


@dataclasses.dataclass
class CheXbertLabeler:
  """CheXbert on clipmed.models.bert.BertEncoder (inference only)."""
  params: dict
  heads: list[tuple[np.ndarray, np.ndarray]]
  tokenizer: Any
  num_heads: int = 12
  batch_size: int = 16

  @classmethod
  def from_checkpoint(cls, checkpoint: str, vocab: str, *, num_heads: int = 12
                      ) -> "CheXbertLabeler":
    """Loads chexbert.pth and a local bert-base-uncased vocabulary (vocab.txt or its folder)."""
    if not os.path.isfile(checkpoint):
      raise UserError(f"CheXbert checkpoint {checkpoint} does not exist; download chexbert.pth "
                      "from the CheXbert authors and pass its path")
    if not vocab or not os.path.exists(vocab):
      raise UserError("CheXbert needs the bert-base-uncased vocabulary on disk: pass --vocab "
                      "with vocab.txt or a folder holding it")
    import torch  # pylint: disable=g-import-not-at-top
    from transformers import BertTokenizerFast  # pylint: disable=g-import-not-at-top
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state = state.get("model_state_dict", state)
    params, heads = convert_state_dict(state, num_heads=num_heads)
    if len(heads) != len(CHEXBERT_CONDITIONS):
      raise UserError(f"{checkpoint} has {len(heads)} linear heads; a CheXbert checkpoint has "
                      f"{len(CHEXBERT_CONDITIONS)}")
    vocab_file = os.path.join(vocab, "vocab.txt") if os.path.isdir(vocab) else vocab
    tokenizer = BertTokenizerFast(vocab_file=vocab_file, do_lower_case=True)
    return cls(params=params, heads=heads, tokenizer=tokenizer, num_heads=num_heads)

  def _model(self):
    from clipmed.models.bert import BertEncoder  # pylint: disable=g-import-not-at-top
    emb = self.params["word_embeddings"]["embedding"]
    layers = sum(1 for k in self.params if k.startswith("layer"))
    return BertEncoder(
        vocab_size=emb.shape[0], hidden_size=emb.shape[1], num_layers=layers,
        num_heads=self.num_heads,
        intermediate_size=self.params["layer0"]["intermediate"]["kernel"].shape[1],
        max_position_embeddings=self.params["position_embeddings"]["embedding"].shape[0],
        type_vocab_size=self.params["token_type_embeddings"]["embedding"].shape[0], dropout=0.0)

  def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> list[np.ndarray]:
    """Head logits for token ids [B, L] and mask [B, L]: 14 arrays [B, C]."""
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    hidden = self._model().apply({"params": self.params}, jnp.asarray(input_ids),
                                 jnp.asarray(attention_mask))
    cls_state = np.asarray(hidden[:, 0])  # [B, H]
    return [cls_state @ kernel + bias for kernel, bias in self.heads]

  def label(self, texts: Sequence[str]) -> np.ndarray:
    """Labels reports (FINDINGS + IMPRESSION when headed). [N, 14] labeler convention."""
    out = np.full((len(texts), chexpert.NUM_CATEGORIES), np.nan, dtype=np.float32)
    for start in range(0, len(texts), self.batch_size):
      batch = [" ".join(sections.clinical_text(t).split()) for t in
               texts[start:start + self.batch_size]]
      enc = self.tokenizer(batch, truncation=True, max_length=MAX_TOKENS, padding="longest",
                           return_tensors="np")
      logits = self.logits(enc["input_ids"].astype(np.int32),
                           enc["attention_mask"].astype(np.int32))
      out[start:start + len(batch)] = logits_to_labels(logits)
    return out
