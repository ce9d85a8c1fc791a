"""WordPiece training and offline loading."""

import os

import pytest

from input_pipeline import tokenizer

CORPUS = [
    "FINDINGS: The lungs are clear. No pleural effusion or pneumothorax.\n\n"
    "IMPRESSION: No acute cardiopulmonary process.",
    "FINDINGS: Moderate right pleural effusion. Heart size is normal.\n\n"
    "IMPRESSION: Moderate right pleural effusion.",
    "FINDINGS: Small left apical pneumothorax. Endotracheal tube terminates 4 cm above the "
    "carina.\n\nIMPRESSION: Small left apical pneumothorax.",
    "FINDINGS: Moderate cardiomegaly. Bibasilar atelectasis.\n\nIMPRESSION: Cardiomegaly.",
] * 5


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("tok"))
  tokenizer.train_wordpiece(CORPUS, out, vocab_size=120)
  return out


def test_files_and_special_ids(tok_dir):
  for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
    assert os.path.exists(os.path.join(tok_dir, name)), name
  with open(os.path.join(tok_dir, "vocab.txt"), encoding="utf-8") as fh:
    vocab = fh.read().split("\n")
  assert vocab[:5] == list(tokenizer.SPECIAL_TOKENS)
  tok = tokenizer.load_tokenizer(tok_dir)
  assert tok.pad_token_id == 0
  assert tok.convert_tokens_to_ids(["[UNK]", "[CLS]", "[SEP]", "[MASK]"]) == [1, 2, 3, 4]
  assert len(tok) <= 120


def test_round_trip_lowercases_and_wraps(tok_dir, monkeypatch):
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  tok = tokenizer.load_tokenizer(tok_dir)
  assert tok.is_fast
  enc = tok("No Pleural EFFUSION.", padding="max_length", max_length=12, truncation=True)
  ids = enc["input_ids"]
  assert ids[0] == tok.cls_token_id
  n = sum(enc["attention_mask"])
  assert ids[n - 1] == tok.sep_token_id and all(i == 0 for i in ids[n:])
  assert tok.decode(ids, skip_special_tokens=True).replace(" .", ".") == "no pleural effusion."
  # Characters never seen in training become [UNK].
  assert tok.unk_token_id in tok("λ")["input_ids"]


def test_batch_truncation(tok_dir):
  tok = tokenizer.load_tokenizer(tok_dir)
  enc = tok(CORPUS[:3], padding="max_length", max_length=8, truncation=True, return_tensors="np")
  assert enc["input_ids"].shape == (3, 8)
  assert (enc["input_ids"][:, -1] == tok.sep_token_id).all()


def test_missing_directory_is_a_clear_error(tmp_path):
  missing = str(tmp_path / "nope")
  with pytest.raises(FileNotFoundError, match="does not exist"):
    tokenizer.load_tokenizer(missing)


def test_directory_without_tokenizer_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="not a tokenizer directory"):
    tokenizer.load_tokenizer(str(tmp_path))


def test_offline_hub_id_is_a_clear_error(monkeypatch):
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  with pytest.raises(FileNotFoundError, match="local directory"):
    tokenizer.load_tokenizer("clipmed-test/certainly-not-cached-tokenizer")


def test_vocab_size_too_small(tmp_path):
  with pytest.raises(ValueError, match="vocab_size"):
    tokenizer.train_wordpiece(CORPUS, str(tmp_path), vocab_size=3)
