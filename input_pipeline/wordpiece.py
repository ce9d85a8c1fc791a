"""Deterministic WordPiece vocabulary learning: BPE-style merges with a fixed tie-break order.

The `tokenizers` library's WordPieceTrainer breaks ties between equally frequent pairs in hash-map
order, so the same texts give a different vocabulary in every new process. This trainer is a pure
function of the word counts and the vocabulary size:

1. Words are counted after the tokenizer's own normaliser and pre-tokeniser (`count_words`).
2. The initial alphabet is every character seen, bare ("x") and as a continuation ("##x") unless
   the pipeline always splits it off (punctuation), so any word made of seen characters can be
   encoded without [UNK] (`initial_alphabet`).
3. Merges (`learn_vocabulary`): the most frequent adjacent pair of symbols, summed over the word
   counts, is merged into one symbol ("pleu" + "##ral" -> "pleural"); ties go to the pair whose
   (left, right) strings sort first. Merging stops at `vocab_size` entries or when every word is
   one symbol.

The merge loop is incremental: pair counts and a pair -> words index are updated only for the words
a merge touches, and a max-heap with lazy invalidation picks the next pair, so the cost follows the
number of merged symbol occurrences, not the number of merges times the corpus.
"""

import collections
from collections.abc import Iterable, Mapping, Sequence
import heapq
from typing import Any

# Marks a piece that continues a word ("effusion" -> "eff", "##usion").
CONTINUATION_PREFIX = "##"


def count_words(texts: Iterable[str], normalizer: Any, pre_tokenizer: Any,
                max_word_chars: int) -> dict[str, int]:
  """Counts the words of `texts` as the tokenizer will see them.

  Args:
    texts: training text, one string per document.
    normalizer: a `tokenizers` normalizer (e.g. the lower-casing BertNormalizer).
    pre_tokenizer: a `tokenizers` pre-tokenizer that splits at spaces (e.g. BertPreTokenizer).
    max_word_chars: words longer than this are skipped: the WordPiece model encodes them as [UNK]
      whatever the vocabulary holds.

  Returns:
    {word: number of occurrences}.

  Raises:
    TypeError: an element of `texts` is not a str.
  """
  # The pre-tokeniser always splits at " ", so it gives the same words run on each space-separated
  # chunk as on the whole text; run once per distinct chunk, it is several times faster on reports.
  chunks = collections.Counter()
  for index, text in enumerate(texts):
    if not isinstance(text, str):
      raise TypeError(f"training text {index} is a {type(text).__name__}, not a str; decode it "
                      "first (e.g. bytes.decode('utf-8'))")
    chunks.update(normalizer.normalize_str(text).split(" "))
  words = collections.Counter()
  for chunk, count in chunks.items():
    if chunk:
      for word, _ in pre_tokenizer.pre_tokenize_str(chunk):
        if len(word) <= max_word_chars:
          words[word] += count
  return dict(words)


def initial_alphabet(words: Iterable[str], normalizer: Any, pre_tokenizer: Any) -> list[str]:
  """The single-character pieces of `words`, sorted: "x" and, where x can continue a word, "##x".

  Every character seen gets both forms unless the normaliser and pre-tokeniser always cut it out
  as a word of its own (punctuation, CJK), so any text made of seen characters encodes without
  [UNK], not only the training words.

  Args:
    words: the training words (normalised and pre-tokenised).
    normalizer: the tokenizer's `tokenizers` normalizer.
    pre_tokenizer: the tokenizer's `tokenizers` pre-tokenizer.
  """
  starts, inner = set(), set()
  for word in words:
    starts.add(word[0])
    inner.update(word[1:])
  pieces = []
  for c in sorted(starts | inner):
    pieces.append(c)
    probe = [w for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(c + c))]
    if c in inner or probe == [c + c]:
      pieces.append(CONTINUATION_PREFIX + c)
  return sorted(pieces)


def train(texts: Iterable[str], vocab_size: int, reserved: Sequence[str], normalizer: Any,
          pre_tokenizer: Any, max_word_chars: int) -> list[str]:
  """Learns the WordPiece vocabulary of `texts` (see the module docstring).

  Args:
    texts: training text, one str per document.
    vocab_size: maximum vocabulary size, `reserved` included.
    reserved: tokens that come first (the special tokens), in this order.
    normalizer: the tokenizer's `tokenizers` normalizer.
    pre_tokenizer: the tokenizer's `tokenizers` pre-tokenizer.
    max_word_chars: the WordPiece model's longest word (longer words are skipped).

  Returns:
    The vocabulary in id order (see `learn_vocabulary`).
  """
  counts = count_words(texts, normalizer, pre_tokenizer, max_word_chars)
  alphabet = initial_alphabet(counts, normalizer, pre_tokenizer)
  return learn_vocabulary(counts, alphabet, vocab_size, reserved)


def _merge_word(symbols: list[int], left: int, right: int, merged: int) -> list[int] | None:
  """`symbols` with each (left, right) occurrence, scanned left to right, replaced by `merged`.

  Returns None when the word has no such pair (the pair -> words index keeps stale entries).
  """
  out = []
  i, n = 0, len(symbols)
  while i < n:
    if i + 1 < n and symbols[i] == left and symbols[i + 1] == right:
      out.append(merged)
      i += 2
    else:
      out.append(symbols[i])
      i += 1
  return out if len(out) < n else None


def learn_vocabulary(word_counts: Mapping[str, int], alphabet: Sequence[str], vocab_size: int,
                     reserved: Sequence[str] = ()) -> list[str]:
  """Learns a WordPiece vocabulary from word counts; a pure function of its arguments.

  Args:
    word_counts: {word: count}; words with a count below 1 are ignored.
    alphabet: the single-character pieces, in id order; must hold the first character of every
      word and "##" + every later one (`initial_alphabet`).
    vocab_size: maximum vocabulary size, `reserved` tokens included.
    reserved: tokens that come first (the special tokens), in this order.

  Returns:
    The vocabulary in id order: `reserved`, then `alphabet`, then the merged pieces in the order
    they were created. Shorter than `vocab_size` when every word became a single piece first.

  Raises:
    ValueError: no words, a character missing from `alphabet`, or `vocab_size` below `reserved`
      plus `alphabet`.
  """
  words = sorted(w for w, count in word_counts.items() if w and count > 0)
  if not words:
    raise ValueError("cannot learn a WordPiece vocabulary: the training texts have no words")
  reserved = list(reserved)
  taken = set(reserved)
  alphabet = [piece for piece in alphabet if piece not in taken]
  if vocab_size < len(reserved) + len(alphabet):
    raise ValueError(
        f"vocab_size={vocab_size} is too small for the training texts: the {len(reserved)} "
        f"special tokens plus the {len(alphabet)} single characters of their words (x and "
        f"{CONTINUATION_PREFIX}x) need {len(reserved) + len(alphabet)} entries; "
        "raise vocab_size to at least that (a few thousand is usual).")

  # Symbols are ints; `strings[s]` is symbol s's piece. Equal pieces share one symbol: a merge that
  # spells an existing piece (not seen in practice, but not ruled out) reuses it and adds no entry.
  strings = list(alphabet)
  symbol_of = {piece: s for s, piece in enumerate(strings)}
  vocab_len = len(reserved) + len(alphabet)
  counts = [word_counts[w] for w in words]
  try:
    seqs = [[symbol_of[w[0]]] + [symbol_of[CONTINUATION_PREFIX + c] for c in w[1:]]
            for w in words]
  except KeyError as e:
    raise ValueError(f"alphabet lacks the piece {e.args[0]!r}") from None
  pair_count = collections.defaultdict(int)  # (left, right) -> occurrences over the corpus
  where = collections.defaultdict(set)  # (left, right) -> words that had it (maybe stale)
  for w, seq in enumerate(seqs):
    for pair in zip(seq, seq[1:]):
      pair_count[pair] += counts[w]
      where[pair].add(w)
  # Max-heap on count, then min on (left string, right string): a total order on pairs because
  # symbols and strings correspond one to one. An entry is valid when its count is current.
  heap = [(-n, strings[a], strings[b], a, b) for (a, b), n in pair_count.items()]
  heapq.heapify(heap)
  prefix_len = len(CONTINUATION_PREFIX)

  while vocab_len < vocab_size and heap:
    neg_count, left_str, right_str, a, b = heapq.heappop(heap)
    count = pair_count.get((a, b), 0)
    if count != -neg_count:
      # Stale. A count that fell is pushed again; one that rose already has its own entry.
      if 0 < count < -neg_count:
        heapq.heappush(heap, (-count, left_str, right_str, a, b))
      continue
    piece = left_str + right_str[prefix_len:]
    merged = symbol_of.get(piece)
    if merged is None:
      merged = symbol_of[piece] = len(strings)
      strings.append(piece)
      if piece not in taken:
        vocab_len += 1
    # Count changes are sums, so the order of the words does not matter.
    delta = collections.defaultdict(int)
    for w in where.pop((a, b)):
      seq = seqs[w]
      new_seq = _merge_word(seq, a, b, merged)
      if new_seq is None:
        continue
      count_w = counts[w]
      for pair in zip(seq, seq[1:]):
        delta[pair] -= count_w
      for pair in zip(new_seq, new_seq[1:]):
        delta[pair] += count_w
        # Pairs without the new symbol were already in the word, hence already indexed.
        if merged in pair:
          where[pair].add(w)
      seqs[w] = new_seq
    for pair, change in delta.items():
      if change:
        new_count = pair_count.get(pair, 0) + change
        if new_count:
          pair_count[pair] = new_count
        else:
          del pair_count[pair]
        if change > 0:
          heapq.heappush(heap, (-new_count, strings[pair[0]], strings[pair[1]]) + pair)
    pair_count.pop((a, b), None)

  return reserved + [piece for piece in strings if piece not in taken]
