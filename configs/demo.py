"""python -m clipmed.main --config=configs/demo.py --workdir=workdirs/demo

The embedded default: the full method (CLIP^{N,G}-D_{t+c+g}: dynamic soft labels from text, clinical
and graph similarity, negation hard negatives, report-graph encoder) with a small Swin + BERT on
SynthCXR, generated on first use. Trains and evaluates in minutes on a laptop CPU. Arguments:
`configs/demo.py:steps=N,batch=B,row=clip` (any row of configs/ablations.py).
"""

from configs import common

DEFAULT_STEPS = 300
DEFAULT_BATCH = 64


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, steps=DEFAULT_STEPS, batch=DEFAULT_BATCH, row="clip_ng_dtcg")
  config = common.base_config()

  config.data.image_size = 128
  config.data.max_text_length = 64
  config.model.embed_dim = 128
  config.model.image.update(dict(patch_size=8, embed_dim=64, depths=(2, 2, 2),
                                 num_heads=(2, 4, 8), window_size=4, drop_path_rate=0.0))
  config.model.text.update(dict(hidden_size=128, num_layers=2, num_heads=2,
                                intermediate_size=256, max_position_embeddings=64, pooling="mean",
                                dropout=0.0))

  config.batch_size = args.batch
  config.num_train_steps = args.steps
  config.optimizer.update(dict(learning_rate=1e-3, warmup_steps=30, weight_decay=0.05))
  config.log_every_steps = 10
  config.checkpoint_every_steps = 100
  common.apply_row(config, args.row)
  return config
