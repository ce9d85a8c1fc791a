"""Embedding for evaluation: jitted image and text encoders of one model, host-side text batching.

    embedder = Embedder(model, tokenizer, eval_batch_size=..., max_text_length=...)
    runner.run(step, **embedder.bind(params))   # embed_images, embed_texts, logit_scale

Texts are tokenised with the same fixed-length Rust tokenizer as the training pipeline
(input_pipeline.transforms.TextTokenizer), so evaluation sees exactly the training token ids.
"""

from collections.abc import Sequence
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from input_pipeline import transforms


def _embed_images(params: Any, images: jax.Array, *, model: nn.Module) -> jax.Array:
  """[B, H, W, C] -> [B, D] L2-normalised image embeddings (eval mode)."""
  return model.apply({"params": params}, images, method=model.encode_image)


def _embed_texts(params: Any, input_ids: jax.Array, attention_mask: jax.Array, *,
                 model: nn.Module) -> jax.Array:
  """[B, L] tokens -> [B, D] L2-normalised text embeddings (eval mode)."""
  return model.apply({"params": params}, input_ids, attention_mask, method=model.encode_text)


class Embedder:
  """Jitted image and text embedding for the evaluators (one compilation per shape)."""

  def __init__(self, model: nn.Module, tokenizer: Any, *, eval_batch_size: int,
               max_text_length: int):
    self._tokenize = transforms.TextTokenizer(tokenizer, max_text_length)
    self._batch_size = int(eval_batch_size)
    self._dim = int(model.config.embed_dim)
    self._images = jax.jit(functools.partial(_embed_images, model=model))
    self._texts = jax.jit(functools.partial(_embed_texts, model=model))
    self._scale = jax.jit(lambda params: model.apply({"params": params},
                                                     method=model.logit_scale))

  def bind(self, params: Any) -> dict[str, Any]:
    """The callables the evaluation runner takes, for these parameters."""
    return dict(
        embed_images=lambda images: np.asarray(self._images(params, jnp.asarray(images))),
        embed_texts=functools.partial(self.embed_texts, params),
        logit_scale=float(self._scale(params)))

  def tokenize(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """[M] texts -> (input_ids, attention_mask) int32 [M, L], as the text encoder gets them."""
    ids, mask = zip(*(self._tokenize(text) for text in texts))
    return np.stack(ids), np.stack(mask)

  def embed_texts(self, params: Any, texts: Sequence[str]) -> np.ndarray:
    """[M] texts -> [M, D] embeddings, in fixed-size padded batches (one compilation)."""
    out = []
    for start in range(0, len(texts), self._batch_size):
      chunk = list(texts[start:start + self._batch_size])
      n = len(chunk)
      chunk += [""] * (self._batch_size - n)
      ids, mask = self.tokenize(chunk)
      emb = self._texts(params, jnp.asarray(ids), jnp.asarray(mask))
      out.append(np.asarray(emb)[:n])
    return np.concatenate(out, axis=0) if out else np.zeros((0, self._dim), np.float32)
