"""WordPiece training (deterministic), fingerprints and offline loading."""

import collections
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from tests.conftest import ROOT

from input_pipeline import tokenizer, wordpiece

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


# Three sentences whose vocabulary is worked out by hand below.
TINY = ["hug hugs", "pug pun", "bun hugs"]
# Words: hug 1, hugs 2, pug 1, pun 1, bun 1. Alphabet: each letter bare and with "##" (letters can
# continue words), sorted ("#" sorts before letters): ids 5-18. Merges, most frequent pair first,
# ties to the smaller (left, right) strings:
#   ##u+##g (4: hug, hugs x2, pug)                        -> ##ug   19
#   h+##ug (3)                                            -> hug    20
#   tie at 2: (##u, ##n) before (hug, ##s): "##u" < "hug" -> ##un   21
#   hug+##s (2)                                           -> hugs   22
#   ties at 1: (b, ##un) < (p, ##ug) < (p, ##un)          -> bun 23, pug 24, pun 25; no pair left.
TINY_VOCAB = list(tokenizer.SPECIAL_TOKENS) + [
    "##b", "##g", "##h", "##n", "##p", "##s", "##u", "b", "g", "h", "n", "p", "s", "u",
    "##ug", "hug", "##un", "hugs"]


def _vocab_txt(tok_dir):
  with open(os.path.join(tok_dir, "vocab.txt"), encoding="utf-8") as fh:
    return fh.read().splitlines()


def test_hand_checked_vocabulary_and_ids(tmp_path):
  tokenizer.train_wordpiece(TINY, str(tmp_path), vocab_size=23)
  assert _vocab_txt(tmp_path) == TINY_VOCAB
  tok = tokenizer.load_tokenizer(str(tmp_path))
  assert tok.get_vocab() == {piece: i for i, piece in enumerate(TINY_VOCAB)}
  # "bun" and "pug" did not fit in 23 entries: greedy longest-match pieces.
  assert tok("Hugs bun pug")["input_ids"] == [2, 22, 12, 21, 16, 19, 3]
  # Unseen words of seen letters ("g" and "##b" never occur in the texts): pieces, not [UNK].
  assert tok.tokenize("gnub") == ["g", "##n", "##u", "##b"]


def test_fewer_pieces_than_vocab_size_gives_a_smaller_vocabulary(tmp_path):
  tokenizer.train_wordpiece(TINY, str(tmp_path), vocab_size=100)
  assert _vocab_txt(tmp_path) == TINY_VOCAB + ["bun", "pug", "pun"]
  tok = tokenizer.load_tokenizer(str(tmp_path))
  assert len(tok) == 26
  assert tok.convert_ids_to_tokens(tok("bun pug pun")["input_ids"]) == [
      "[CLS]", "bun", "pug", "pun", "[SEP]"]


def test_vocab_size_below_the_alphabet_is_a_clear_error(tmp_path):
  with pytest.raises(ValueError, match=r"vocab_size=18 is too small.*need 19 entries"):
    tokenizer.train_wordpiece(TINY, str(tmp_path), vocab_size=18)
  tokenizer.train_wordpiece(TINY, str(tmp_path), vocab_size=19)  # alphabet only
  assert _vocab_txt(tmp_path) == TINY_VOCAB[:19]


def test_texts_without_words_or_not_str_are_clear_errors(tmp_path):
  with pytest.raises(ValueError, match="no words"):
    tokenizer.train_wordpiece(["", "   ", "\n"], str(tmp_path), vocab_size=100)
  with pytest.raises(TypeError, match="text 1 is a bytes"):
    tokenizer.train_wordpiece(["ok", b"bytes"], str(tmp_path), vocab_size=100)


def test_common_words_whole_unseen_words_in_pieces_never_unk(tok_dir):
  tok = tokenizer.load_tokenizer(tok_dir)
  for word in ("pleural", "effusion", "pneumothorax", "cardiomegaly", "impression"):
    assert tok.tokenize(word) == [word]
  assert tok.tokenize("Effusions") == ["effusion", "##s"]
  pieces = tok.tokenize("pneumonia")
  assert len(pieces) > 1 and pieces[0] == "p" and all(p.startswith("##") for p in pieces[1:])
  assert tok.convert_tokens_to_string(pieces) == "pneumonia"
  # Any text made of the training characters encodes without [UNK].
  chars = sorted(set("".join(CORPUS).lower()) - set(" \n"))
  rng = np.random.default_rng(0)
  words = ["".join(rng.choice(chars, size=rng.integers(1, 15))) for _ in range(300)]
  ids = tok(" ".join(words))["input_ids"]
  assert tok.unk_token_id not in ids and len(ids) > 300


def test_word_counts_equal_the_backend_pre_tokenisation(tok_dir):
  backend = tokenizer.load_tokenizer(tok_dir).backend_tokenizer
  texts = ["Caf\u00e9 3.5cm\tx-ray\u00a0\u00a0R\u00d6NTGEN\u2028na\u00efve",
           "\u0301accent first, \u4e2d\u6587 chars; \x1fcontrol\x00 chars",
           "done.\r\nNEXT   line " + "x" * 150, ""] + CORPUS[:4]
  expected = collections.Counter(
      word for text in texts
      for word, _ in backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str(text))
      if len(word) <= tokenizer.MAX_WORD_CHARS)
  got = wordpiece.count_words(texts, backend.normalizer, backend.pre_tokenizer,
                              tokenizer.MAX_WORD_CHARS)
  assert got == dict(expected)
  assert "cafe" in got and "naive" in got and "x" * 150 not in got


def _reference_vocabulary(word_counts, alphabet, vocab_size):
  """learn_vocabulary's definition, run naively: recount every pair before each merge."""
  seqs = {w: [w[0]] + ["##" + c for c in w[1:]] for w in word_counts}
  vocab = list(alphabet)
  while len(vocab) < vocab_size:
    pairs = collections.Counter()
    for word, seq in seqs.items():
      for pair in zip(seq, seq[1:]):
        pairs[pair] += word_counts[word]
    if not pairs:
      break
    left, right = min(pairs, key=lambda pair: (-pairs[pair], pair))
    if left + right[2:] not in vocab:
      vocab.append(left + right[2:])
    for word, seq in seqs.items():
      out, i = [], 0
      while i < len(seq):
        if seq[i:i + 2] == [left, right]:
          out.append(left + right[2:])
          i += 2
        else:
          out.append(seq[i])
          i += 1
      seqs[word] = out
  return vocab


@pytest.mark.parametrize("seed", range(6))
def test_incremental_merges_equal_the_naive_definition(seed):
  # Three letters and small counts: ties at most steps, overlapping pairs ("aaa").
  rng = np.random.default_rng(seed)
  words = {"".join(rng.choice(list("abc"), size=rng.integers(1, 9))): int(rng.integers(1, 4))
           for _ in range(150)}
  alphabet = sorted({c for c in "abc"} | {"##" + c for c in "abc"})
  for vocab_size in (15, 40, 10_000):
    assert wordpiece.learn_vocabulary(words, alphabet, vocab_size) == _reference_vocabulary(
        words, alphabet, vocab_size)


def _train_in_new_process(corpus_path, out_dir, hash_seed):
  code = ("import json, sys\n"
          "from input_pipeline import tokenizer\n"
          "with open(sys.argv[1], encoding='utf-8') as fh:\n"
          "  texts = json.load(fh)\n"
          "tokenizer.train_wordpiece(texts, sys.argv[2], 120)\n"
          "print(tokenizer.tokenizer_fingerprint(sys.argv[2]))\n")
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
             PYTHONHASHSEED=str(hash_seed), HF_HUB_OFFLINE="1")
  proc = subprocess.run([sys.executable, "-c", code, corpus_path, out_dir], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout.strip().splitlines()[-1]


def test_separate_processes_write_identical_files(tok_dir, tmp_path):
  corpus_path = str(tmp_path / "corpus.json")
  with open(corpus_path, "w", encoding="utf-8") as fh:
    json.dump(CORPUS, fh)
  # Different string-hash seeds: set or dict-of-str iteration order must not leak into the ids.
  dirs = [str(tmp_path / "a"), str(tmp_path / "b")]
  fingerprints = [_train_in_new_process(corpus_path, d, seed) for d, seed in zip(dirs, (1, 2))]
  for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json"):
    contents = set()
    for d in dirs + [tok_dir]:
      with open(os.path.join(d, name), "rb") as fh:
        contents.add(fh.read())
    assert len(contents) == 1, name
  assert fingerprints[0] == fingerprints[1] == tokenizer.tokenizer_fingerprint(tok_dir)


def test_fingerprint_follows_the_ids_not_padding_or_truncation(tok_dir, tmp_path):
  first = tokenizer.load_tokenizer(tok_dir)
  fingerprint = tokenizer.tokenizer_fingerprint(first)
  assert len(fingerprint) == 16 and int(fingerprint, 16) >= 0
  assert tokenizer.tokenizer_fingerprint(tokenizer.load_tokenizer(tok_dir)) == fingerprint
  assert tokenizer.tokenizer_fingerprint(tok_dir) == fingerprint
  # Padding and truncation settings (which the transformers front end leaves on the backend).
  first(CORPUS[:2], padding="max_length", truncation=True, max_length=8)
  first.backend_tokenizer.enable_padding(length=32, pad_id=0, pad_token="[PAD]")
  first.backend_tokenizer.enable_truncation(16)
  assert tokenizer.tokenizer_fingerprint(first) == fingerprint
  assert tokenizer.tokenizer_fingerprint(first.backend_tokenizer) == fingerprint
  # One vocabulary entry renamed (same ids otherwise).
  changed = str(tmp_path / "changed")
  shutil.copytree(tok_dir, changed)
  with open(os.path.join(changed, "tokenizer.json"), encoding="utf-8") as fh:
    state = json.load(fh)
  vocab = state["model"]["vocab"]
  vocab["pleurals"] = vocab.pop("pleural")
  with open(os.path.join(changed, "tokenizer.json"), "w", encoding="utf-8") as fh:
    json.dump(state, fh)
  assert tokenizer.tokenizer_fingerprint(changed) != fingerprint
  # A different post-processor changes the ids of every text.
  other = tokenizer.load_tokenizer(tok_dir)
  other.backend_tokenizer.post_processor = None
  assert tokenizer.tokenizer_fingerprint(other) != fingerprint


def test_fingerprint_rejects_a_slow_tokenizer():
  with pytest.raises(TypeError, match="fast tokenizer"):
    tokenizer.tokenizer_fingerprint(object())
