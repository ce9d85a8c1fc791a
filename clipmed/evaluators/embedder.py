"""Embedding for evaluation: jitted image and text encoders of one model, host-side text batching.

    embedder = Embedder(model, tokenizer, eval_batch_size=..., max_text_length=...,
                        batch_sharding=s.batch_sharding)
    runner.run(step, **embedder.bind(params))   # embed_images, embed_texts, logit_scale

Texts are tokenised with the same fixed-length Rust tokenizer as the training pipeline
(input_pipeline.transforms.TextTokenizer), so evaluation sees exactly the training token ids.

With the run's batch sharding, each call's rows are sharded over the mesh's data axes like a
training batch, and in a multi-process run every process takes part in every call (they are
collectives): `embed_images` embeds the rows this process passes (its share of a split; the runner
gathers the shares) and `embed_texts` splits the texts, the same list on every process, into
per-process blocks (input_pipeline.pipeline.process_rows) and gathers the embeddings, so each
process encodes about 1/P of them and all get all of them.
"""

from collections.abc import Sequence
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from input_pipeline import pipeline, transforms


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
               max_text_length: int, batch_sharding: jax.sharding.NamedSharding | None = None):
    """Builds the jitted encoders.

    Args:
      model: the CLIPModel.
      tokenizer: the run's tokenizer.
      eval_batch_size: texts per encoder call, over all processes.
      max_text_length: L.
      batch_sharding: the run's batch sharding (NamedSharding over the data axes of its mesh);
        None (clipmed.predict, one process): arrays go to the default device as they are.
    """
    self._tokenize = transforms.TextTokenizer(tokenizer, max_text_length)
    self._batch_size = int(eval_batch_size)
    self._dim = int(model.config.embed_dim)
    self._sharding = batch_sharding
    out = {} if batch_sharding is None else dict(out_shardings=batch_sharding)
    self._images = jax.jit(functools.partial(_embed_images, model=model), **out)
    self._texts = jax.jit(functools.partial(_embed_texts, model=model), **out)
    self._scale = jax.jit(lambda params: model.apply({"params": params},
                                                     method=model.logit_scale))

  def bind(self, params: Any) -> dict[str, Any]:
    """The callables the evaluation runner takes, for these parameters."""
    return dict(
        embed_images=functools.partial(self.embed_images, params),
        embed_texts=functools.partial(self.embed_texts, params),
        logit_scale=float(self._scale(params)))

  def _local_rows(self, fn, params: Any, *rows: np.ndarray) -> np.ndarray:
    """fn(params, *rows) for this process's rows [n, ...] -> its [n, D] results."""
    if self._sharding is None:
      return np.asarray(fn(params, *(jnp.asarray(r) for r in rows)))
    n = rows[0].shape[0]
    pad = -n % jax.local_device_count()  # whole rows on every local device
    if pad:
      rows = tuple(np.concatenate([r, np.repeat(r[-1:], pad, axis=0)]) for r in rows)
    mesh, spec = self._sharding.mesh, self._sharding.spec
    out = fn(params, *multihost_utils.host_local_array_to_global_array(rows, mesh, spec))
    return np.asarray(multihost_utils.global_array_to_host_local_array(out, mesh, spec))[:n]

  def embed_images(self, params: Any, images: np.ndarray) -> np.ndarray:
    """[B, H, W, C] images (this process's) -> [B, D] their embeddings.

    With batch_sharding in a multi-process run, every process calls this the same number of times
    with the same B.
    """
    return self._local_rows(self._images, params, np.asarray(images))

  def tokenize(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """[M] texts -> (input_ids, attention_mask) int32 [M, L], as the text encoder gets them."""
    ids, mask = zip(*(self._tokenize(text) for text in texts))
    return np.stack(ids), np.stack(mask)

  def embed_texts(self, params: Any, texts: Sequence[str]) -> np.ndarray:
    """[M] texts -> [M, D] embeddings, in fixed-size padded batches (one compilation).

    With batch_sharding in a multi-process run, every process passes the same texts; each
    encodes its block of them and all receive all M rows.
    """
    texts = list(texts)
    if not texts:
      return np.zeros((0, self._dim), np.float32)
    index, count = 0, 1
    if self._sharding is not None:
      index, count = jax.process_index(), jax.process_count()
    rows, _ = pipeline.process_rows(len(texts), self._batch_size, index, count)
    per_batch = self._batch_size // count
    out = []
    for start in range(0, len(rows), per_batch):
      ids, mask = self.tokenize([texts[i] for i in rows[start:start + per_batch]])
      out.append(self._local_rows(self._texts, params, ids, mask))
    emb = pipeline.gather_rows(np.concatenate(out)) if count > 1 else np.concatenate(out)
    valid = np.concatenate([pipeline.process_rows(len(texts), self._batch_size, p, count)[1]
                            for p in range(count)])
    return emb[valid]
