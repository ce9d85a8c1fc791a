"""python scripts/bench_pytorch.py --batch 8 --steps 5

The PyTorch eager reference for `python -m clipmed.benchmark train --config=configs/full.py:row=clip`:
the same model at the same shapes, trained one InfoNCE step at a time, printed as one JSON line
with the same step_ms / samples_per_s fields. Swin-T 224 px (timm's when torchvision imports,
else transformers' SwinModel), BERT-base with Bio_ClinicalBERT's 28,996-token vocabulary and
128 tokens (transformers' BertModel), MLP projection heads to 512, a learned logit scale, AdamW
(fused where this torch supports it), random weights and a random batch; dropout 0.1 and stochastic
depth 0.1 in training mode, as configs/full.py. torch comes from requirements-dev.txt.

    python scripts/bench_pytorch.py --matmuls

times instead the step's largest matrix products at batch 8 (`MATMULS`: BERT-base's feed-forward
and attention projections over 8 x 128 tokens, Swin-T's stage-1 and stage-3 MLPs), each in the
three forms a train step runs (x @ w forward; g @ w.T and x.T @ g backward), with torch and with
jax.jit in the same process, one JSON line per product: which library's matrix multiply is faster
on this machine, apart from everything else in the step.
"""

import argparse
import json
import statistics
import time

import torch
from torch import nn
import torch.nn.functional as F


def _swin_t(drop_path_rate: float) -> tuple[nn.Module, str]:
  """Swin-T, random weights, returning pooled [B, 768] features; and which implementation."""
  try:
    import timm  # pylint: disable=g-import-not-at-top
    return timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=0,
                             drop_path_rate=drop_path_rate), "timm"
  except ImportError:  # timm needs torchvision
    from transformers import SwinConfig, SwinModel  # pylint: disable=g-import-not-at-top

    class Pooled(nn.Module):
      def __init__(self):
        super().__init__()
        self.swin = SwinModel(SwinConfig(
            image_size=224, patch_size=4, num_channels=3, embed_dim=96, depths=[2, 2, 6, 2],
            num_heads=[3, 6, 12, 24], window_size=7, drop_path_rate=drop_path_rate,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0), add_pooling_layer=True)

      def forward(self, images):
        return self.swin(pixel_values=images).pooler_output

    return Pooled(), "transformers"


class ClipReference(nn.Module):
  """Image and text encoders, MLP heads into a 512-d space, learned logit scale."""

  def __init__(self, vocab_size: int, embed_dim: int = 512):
    super().__init__()
    from transformers import BertConfig, BertModel  # pylint: disable=g-import-not-at-top
    self.image, self.image_impl = _swin_t(0.1)
    self.text = BertModel(BertConfig(vocab_size=vocab_size, hidden_size=768,
                                     num_hidden_layers=12, num_attention_heads=12,
                                     intermediate_size=3072, hidden_dropout_prob=0.1,
                                     attention_probs_dropout_prob=0.1),
                          add_pooling_layer=False)
    head = lambda width: nn.Sequential(nn.Linear(width, width), nn.GELU(),  # noqa: E731
                                       nn.Linear(width, embed_dim))
    self.image_head, self.text_head = head(768), head(768)
    self.log_scale = nn.Parameter(torch.tensor(2.6592))

  def forward(self, images, input_ids, attention_mask):
    image = F.normalize(self.image_head(self.image(images)), dim=-1)
    hidden = self.text(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    text = F.normalize(self.text_head(hidden[:, 0]), dim=-1)
    logits = self.log_scale.exp().clamp(max=100.0) * image @ text.T
    labels = torch.arange(len(logits))
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


# name: (rows, inner, columns) of x @ w at batch 8.
MATMULS = {
    "bert_ffn_in": (8 * 128, 768, 3072),
    "bert_ffn_out": (8 * 128, 3072, 768),
    "bert_attention_projection": (8 * 128, 768, 768),
    "swin_stage1_mlp_in": (8 * 56 * 56, 96, 384),
    "swin_stage3_mlp_in": (8 * 14 * 14, 384, 1536),
}


def _median_ms(run, repeats: int) -> float:
  run()  # warm-up (and jax's compilation)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    run()
    times.append((time.perf_counter() - start) * 1e3)
  return statistics.median(times)


def time_matmuls(shapes: dict[str, tuple[int, int, int]], repeats: int) -> list[dict]:
  """Per product and form: median milliseconds and GFLOP/s with torch and with jax.jit (float32,
  the same random operands), and the largest difference between the two results relative to the
  largest entry (the two libraries compute the same product)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  forms = {"x @ w": lambda x, w, g: x @ w, "g @ w.T": lambda x, w, g: g @ w.T,
           "x.T @ g": lambda x, w, g: x.T @ g}
  rows = []
  for name, (m, k, n) in shapes.items():
    operands = [rng.standard_normal(shape, np.float32) for shape in ((m, k), (k, n), (m, n))]
    on_torch = [torch.from_numpy(a) for a in operands]
    on_jax = [jax.device_put(a) for a in operands]
    gflop = 2 * m * k * n / 1e9
    for form, product in forms.items():
      jitted = jax.jit(product)
      torch_ms = _median_ms(lambda: product(*on_torch), repeats)
      jax_ms = _median_ms(lambda: jitted(*on_jax).block_until_ready(), repeats)
      expected = product(*on_torch).numpy()
      difference = np.abs(np.asarray(jitted(*on_jax)) - expected).max() / np.abs(expected).max()
      rows.append({"benchmark": "matmul", "product": name, "form": form, "shape": [m, k, n],
                   "torch_ms": round(torch_ms, 2), "jax_ms": round(jax_ms, 2),
                   "torch_gflops_per_s": round(gflop / torch_ms * 1e3, 1),
                   "jax_gflops_per_s": round(gflop / jax_ms * 1e3, 1),
                   "relative_difference": float(difference)})
  return rows


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--steps", type=int, default=5, help="timed steps (after 2 warm-up steps)")
  parser.add_argument("--vocab_size", type=int, default=28996)
  parser.add_argument("--text_length", type=int, default=128)
  parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
  parser.add_argument("--matmuls", action="store_true",
                      help="time the step's largest matrix products in torch and jax instead")
  args = parser.parse_args()
  if args.threads:
    torch.set_num_threads(args.threads)
  if args.matmuls:
    for row in time_matmuls(MATMULS, max(args.steps, 3)):
      print(json.dumps(row), flush=True)
    return
  torch.manual_seed(0)
  model = ClipReference(args.vocab_size).train()
  try:
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.05, fused=True)
    fused = True
  except (RuntimeError, TypeError):
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.05)
    fused = False
  images = torch.randn(args.batch, 3, 224, 224)
  ids = torch.randint(0, args.vocab_size, (args.batch, args.text_length))
  mask = torch.ones_like(ids)
  times = []
  for i in range(args.steps + 2):
    start = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss = model(images, ids, mask)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    if i >= 2:
      times.append((time.perf_counter() - start) * 1e3)
  median = statistics.median(times)
  print(json.dumps({
      "benchmark": "pytorch_train", "batch": args.batch, "torch": torch.__version__,
      "swin": model.image_impl, "fused_adamw": fused, "threads": torch.get_num_threads(),
      "step_ms": {"median": round(median, 1), "min": round(min(times), 1),
                  "max": round(max(times), 1)},
      "samples_per_s": round(args.batch / median * 1e3, 3), "loss": round(float(loss.detach()), 4)}),
      flush=True)


if __name__ == "__main__":
  main()
