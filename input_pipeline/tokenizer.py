"""BERT-style WordPiece tokenizers: train one on report text, load it (or a hub one) for the model.

`train_wordpiece` writes a transformers tokenizer directory (tokenizer.json, tokenizer_config.json,
special_tokens_map.json and vocab.txt) that `load_tokenizer` reads offline. Encoding adds
[CLS] ... [SEP]; [PAD] has id 0.
"""

from collections.abc import Iterable
import os

from clipmed import errors

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def train_wordpiece(texts: Iterable[str], out_dir: str, vocab_size: int) -> None:
  """Trains a lower-casing WordPiece tokenizer on `texts` and saves it to `out_dir`.

  Args:
    texts: training text (e.g. the train split's reports).
    out_dir: directory to write (created if missing).
    vocab_size: maximum vocabulary size, special tokens included (smaller if the text has fewer
      distinct pieces).
  """
  from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
  from tokenizers import trainers
  import transformers

  if vocab_size < len(SPECIAL_TOKENS) + 1:
    raise ValueError(f"vocab_size must exceed the {len(SPECIAL_TOKENS)} special tokens, "
                     f"got {vocab_size}")
  tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
  tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True,
                                              clean_text=True, handle_chinese_chars=True)
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tok.decoder = decoders.WordPiece(prefix="##")
  trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                      continuing_subword_prefix="##", min_frequency=1)
  tok.train_from_iterator(iter(texts), trainer=trainer)
  if tok.token_to_id("[PAD]") != 0:
    raise RuntimeError("WordPiece training did not put [PAD] at id 0")
  cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
  tok.post_processor = processors.TemplateProcessing(
      single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
      special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
  fast = transformers.PreTrainedTokenizerFast(
      tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
      sep_token="[SEP]", mask_token="[MASK]", do_lower_case=True, model_max_length=512)
  os.makedirs(out_dir, exist_ok=True)
  fast.save_pretrained(out_dir)
  vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
  with open(os.path.join(out_dir, "vocab.txt"), "w", encoding="utf-8") as fh:
    fh.write("".join(token + "\n" for token, _ in vocab))


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
