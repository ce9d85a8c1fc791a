"""BERT-style WordPiece tokenizers: train one on report text, load it (or a hub one) for the model.

`train_wordpiece` writes a transformers tokenizer directory (tokenizer.json, tokenizer_config.json,
special_tokens_map.json and vocab.txt) that `load_tokenizer` reads offline. Encoding adds
[CLS] ... [SEP]; [PAD] has id 0. Training is deterministic (input_pipeline/wordpiece.py): the same
texts and vocab_size give byte-identical files in any process. `tokenizer_fingerprint` names what
maps text to ids, so a checkpoint can refuse a tokenizer other than the one it was trained with.
"""

from collections.abc import Iterable
import hashlib
import json
import os
from typing import Any

from input_pipeline import wordpiece

from clipmed import errors

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# The transformers attribute of each special token (special_tokens_map.json).
_SPECIAL_TOKEN_ROLES = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]",
                        "sep_token": "[SEP]", "mask_token": "[MASK]"}
# Longer words encode as [UNK] (BERT's limit); training skips them.
MAX_WORD_CHARS = 100
# Backend settings that only shape batches or decoding, not the ids of a text.
_NOT_FINGERPRINTED = ("padding", "truncation", "decoder", "version")


def _normalizer():
  from tokenizers import normalizers

  return normalizers.BertNormalizer(lowercase=True, strip_accents=True, clean_text=True,
                                    handle_chinese_chars=True)


def _pre_tokenizer():
  from tokenizers import pre_tokenizers

  return pre_tokenizers.BertPreTokenizer()


def _fast_tokenizer(vocab: list[str]):
  """The transformers fast tokenizer of a vocabulary in id order (special tokens first)."""
  from tokenizers import Tokenizer, decoders, models, processors
  import transformers

  tok = Tokenizer(models.WordPiece(
      vocab={piece: i for i, piece in enumerate(vocab)}, unk_token="[UNK]",
      continuing_subword_prefix=wordpiece.CONTINUATION_PREFIX,
      max_input_chars_per_word=MAX_WORD_CHARS))
  tok.normalizer = _normalizer()
  tok.pre_tokenizer = _pre_tokenizer()
  tok.decoder = decoders.WordPiece(prefix=wordpiece.CONTINUATION_PREFIX)
  tok.add_special_tokens(list(SPECIAL_TOKENS))
  cls_id, sep_id = vocab.index("[CLS]"), vocab.index("[SEP]")
  tok.post_processor = processors.TemplateProcessing(
      single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
      special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
  return transformers.PreTrainedTokenizerFast(
      tokenizer_object=tok, **_SPECIAL_TOKEN_ROLES, do_lower_case=True, model_max_length=512)


def train_wordpiece(texts: Iterable[str], out_dir: str, vocab_size: int) -> None:
  """Trains a lower-casing WordPiece tokenizer on `texts` and saves it to `out_dir`.

  Deterministic: the files depend only on the texts (their words and counts), `vocab_size` and
  the installed tokenizers/transformers versions, not on the process.
  Ids: the special tokens ([PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4), then the characters
  ("x" and continuation "##x") sorted, then the learned pieces in learning order.

  Args:
    texts: training text (e.g. the train split's reports), one str per document.
    out_dir: directory to write (created if missing).
    vocab_size: maximum vocabulary size, special tokens included (smaller if the text has fewer
      distinct pieces).

  Raises:
    ValueError: `vocab_size` cannot hold the special tokens and the characters of `texts`, or
      `texts` has no words.
  """
  if vocab_size <= len(SPECIAL_TOKENS):
    raise ValueError(f"vocab_size must exceed the {len(SPECIAL_TOKENS)} special tokens, "
                     f"got {vocab_size}")
  vocab = wordpiece.train(texts, vocab_size, SPECIAL_TOKENS, _normalizer(), _pre_tokenizer(),
                          MAX_WORD_CHARS)
  fast = _fast_tokenizer(vocab)
  os.makedirs(out_dir, exist_ok=True)
  fast.save_pretrained(out_dir)
  # Written here so the directory looks the same under transformers 4 and 5 (5 omits the map).
  with open(os.path.join(out_dir, "special_tokens_map.json"), "w", encoding="utf-8") as fh:
    json.dump(_SPECIAL_TOKEN_ROLES, fh, indent=2, sort_keys=True)
    fh.write("\n")
  with open(os.path.join(out_dir, "vocab.txt"), "w", encoding="utf-8", newline="\n") as fh:
    fh.write("".join(piece + "\n" for piece in vocab))


def tokenizer_fingerprint(tokenizer: Any) -> str:
  """A short digest of everything that maps text to token ids.

  Covers the vocabulary with its ids, the normaliser, pre-tokeniser, model settings, added tokens
  and post-processor of the backend tokenizer; not padding, truncation or the decoder, which do not
  change the ids of a text. Stored with checkpoints to refuse a different tokenizer.

  Args:
    tokenizer: a transformers fast tokenizer, a `tokenizers.Tokenizer`, or a directory path or hub
      id (loaded with `load_tokenizer`).

  Returns:
    16 hex characters (the start of a sha256 of the canonical JSON, keys sorted).

  Raises:
    TypeError: `tokenizer` is not a fast tokenizer.
  """
  import tokenizers

  if isinstance(tokenizer, (str, os.PathLike)):
    tokenizer = load_tokenizer(tokenizer)
  backend = tokenizer if isinstance(tokenizer, tokenizers.Tokenizer) else getattr(
      tokenizer, "backend_tokenizer", None)
  if not isinstance(backend, tokenizers.Tokenizer):
    raise TypeError(f"tokenizer_fingerprint needs a fast tokenizer (with .backend_tokenizer), "
                    f"got {type(tokenizer).__name__}; load it with load_tokenizer(path)")
  state = json.loads(backend.to_str())
  for key in _NOT_FINGERPRINTED:
    state.pop(key, None)
  canonical = json.dumps(state, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
  return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def _offline_env() -> bool:
  return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
             for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def load_tokenizer(name_or_path: str, *, local_files_only: bool | None = None):
  """Loads a fast BERT-style tokenizer from a local directory or a Hugging Face hub id.

  Args:
    name_or_path: a directory written by `train_wordpiece` (or any local transformers tokenizer
      directory), or a hub id such as "microsoft/BiomedVLP-CXR-BERT-general".
    local_files_only: for hub ids, use the local cache only (no network). Default: true when
      HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is set (read at call time).

  Returns:
    A transformers fast tokenizer whose encodings are [CLS] ... [SEP] with [PAD] padding.

  Raises:
    FileNotFoundError: the path does not exist, or the hub id cannot be fetched (offline).
  """
  import transformers

  name_or_path = os.fspath(name_or_path)
  expanded = os.path.expanduser(name_or_path)
  if os.path.isdir(expanded):
    if not os.path.exists(os.path.join(expanded, "tokenizer.json")) and not os.path.exists(
        os.path.join(expanded, "vocab.txt")):
      raise errors.FileError(
          f"{expanded} has no tokenizer.json or vocab.txt: it is not a tokenizer directory. "
          "Point config.data.tokenizer at a directory written by train_wordpiece (or by "
          "save_pretrained), or leave it empty to use the dataset's own tokenizer.")
    tok = transformers.AutoTokenizer.from_pretrained(expanded, local_files_only=True)
  elif name_or_path.startswith((".", "/", "~")) or os.path.isabs(name_or_path):
    raise errors.FileError(
        f"tokenizer directory {expanded} does not exist. Run the data preparation first "
        "(input_pipeline.synthcxr.prepare writes <dataset dir>/tokenizer) or fix "
        "config.data.tokenizer.")
  else:
    if local_files_only is None:
      local_files_only = _offline_env()
    try:
      tok = transformers.AutoTokenizer.from_pretrained(name_or_path,
                                                       local_files_only=local_files_only)
    except (OSError, ValueError) as e:
      raise errors.FileError(
          f"could not load tokenizer {name_or_path!r}: it is not a local directory and the "
          "Hugging Face hub did not provide it (offline, HF_HUB_OFFLINE=1, or a wrong id). "
          "Download it once with network access (it is then cached), or pass a local "
          f"directory. Original error: {e}") from e
  if not getattr(tok, "is_fast", False):
    raise TypeError(f"tokenizer {name_or_path!r} is not a fast tokenizer")
  return tok
