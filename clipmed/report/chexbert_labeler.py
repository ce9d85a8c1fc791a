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

_HEAD_RE = re.compile(r"^linear_heads\.(\d+)\.(weight|bias)$")
_LAYER_RE = re.compile(r"^(?:bert\.)?encoder\.layer\.(\d+)\.")


def _numpy(value: Any) -> np.ndarray:
  if hasattr(value, "detach"):  # a torch tensor
    value = value.detach().cpu().numpy()
  return np.asarray(value, dtype=np.float32)


def bert_architecture(bert_state: Mapping[str, np.ndarray], num_heads: int) -> dict[str, int]:
  """BertEncoder arguments read off a BERT state dict (head count must be given)."""
  get = lambda name: bert_state.get("bert." + name, bert_state.get(name))  # noqa: E731
  words = get("embeddings.word_embeddings.weight")
  if words is None:
    raise ValueError("the checkpoint has no BERT word embeddings (embeddings.word_embeddings)")
  layers = {int(m.group(1)) for k in bert_state if (m := _LAYER_RE.match(k))}
  return dict(
      vocab_size=words.shape[0], hidden_size=words.shape[1], num_layers=len(layers),
      num_heads=num_heads,
      intermediate_size=get("encoder.layer.0.intermediate.dense.weight").shape[0],
      max_position_embeddings=get("embeddings.position_embeddings.weight").shape[0],
      type_vocab_size=get("embeddings.token_type_embeddings.weight").shape[0])


def convert_state_dict(state_dict: Mapping[str, Any], *, num_heads: int, source: str = "CheXbert"
                       ) -> tuple[dict, list[tuple[np.ndarray, np.ndarray]], dict[str, int]]:
  """Maps a CheXbert state dict onto clipmed.models.bert.BertEncoder and the linear heads.

  The BERT part goes through the project's Hugging Face BERT name table
  (clipmed.models.convert.convert_bert), which checks that every tensor maps to exactly one
  parameter of the right shape.

  Args:
    state_dict: parameter name -> array (torch tensors or numpy); a "module." prefix (from
      DataParallel) is accepted.
    num_heads: attention heads of the model (BERT-base: 12).
    source: name of the checkpoint for error messages.

  Returns:
    (BertEncoder params, [(kernel [H, C], bias [C]) per linear head], BertEncoder arguments).
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from clipmed.models import convert  # pylint: disable=g-import-not-at-top
  from clipmed.models.bert import BertEncoder  # pylint: disable=g-import-not-at-top

  bert_state, heads = {}, {}
  for name, value in state_dict.items():
    name = name.removeprefix("module.")
    head = _HEAD_RE.match(name)
    if head:
      heads.setdefault(int(head.group(1)), {})[head.group(2)] = _numpy(value)
    else:
      bert_state[name] = _numpy(value)
  arch = bert_architecture(bert_state, num_heads)
  model = BertEncoder(**arch, dropout=0.0)
  ids = jnp.zeros((1, 2), jnp.int32)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), ids, jnp.ones_like(ids)))
  expected = {path: tuple(v.shape) for path, v in
              convert.flatten(nn.meta.unbox(shapes["params"])).items()}
  params = convert.unflatten(convert.convert_bert(bert_state, expected, source))
  head_list = []
  for k in sorted(heads):
    if set(heads[k]) != {"weight", "bias"}:
      raise ValueError(f"{source}: linear head {k} lacks its weight or bias")
    head_list.append((heads[k]["weight"].T.copy(), heads[k]["bias"]))
  return params, head_list, arch


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
  architecture: dict[str, int]
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
    params, heads, arch = convert_state_dict(state, num_heads=num_heads, source=checkpoint)
    if len(heads) != len(CHEXBERT_CONDITIONS):
      raise UserError(f"{checkpoint} has {len(heads)} linear heads; a CheXbert checkpoint has "
                      f"{len(CHEXBERT_CONDITIONS)}")
    vocab_file = os.path.join(vocab, "vocab.txt") if os.path.isdir(vocab) else vocab
    tokenizer = BertTokenizerFast(vocab_file=vocab_file, do_lower_case=True)
    return cls(params=params, heads=heads, tokenizer=tokenizer, architecture=arch)

  def _model(self):
    from clipmed.models.bert import BertEncoder  # pylint: disable=g-import-not-at-top
    return BertEncoder(**self.architecture, dropout=0.0)

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
