"""python -m clipmed.main --config=configs/tiny.py --workdir=/tmp/clipmed_tiny

A seconds-long configuration for tests and smoke runs: a few dozen 64 px SynthCXR studies and a
model of a few thousand parameters. Arguments: `configs/tiny.py:steps=N,batch=B,data_dir=PATH,
evals=E,dataset=D`, where E is `all` (default), `none` or evaluation names joined by `+`
(`retrieval+x`), and D a dataset name (default synth_cxr; a real dataset must be prepared).
"""

from clipmed import errors
from configs import common


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, steps=6, batch=8, data_dir="data/tfds", evals="all",
                          dataset="synth_cxr")
  config = common.base_config()

  config.data.name = args.dataset
  config.data.data_dir = args.data_dir
  config.data.synth.update(dict(image_size=64, num_train=48, num_validation=8, num_test=24,
                                vocab_size=300))
  config.data.image_size = 64
  config.data.max_text_length = 32
  config.model.embed_dim = 16
  config.model.image.update(dict(patch_size=8, embed_dim=16, depths=(1, 1),
                                 num_heads=(2, 2), window_size=4, drop_path_rate=0.0))
  config.model.text.update(dict(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                                max_position_embeddings=32, dropout=0.0))

  config.batch_size = args.batch
  config.num_train_steps = args.steps
  config.optimizer.update(dict(learning_rate=1e-3, warmup_steps=2))
  config.log_every_steps = 2
  config.checkpoint_every_steps = 3
  config.eval_batch_size = 8
  # The TensorBoard pictures cost seconds per evaluation; tests that read them switch them on.
  config.eval_summaries.enabled = False
  for name in config.evals:
    config.evals[name].num_bootstrap = 50
  if args.evals != "all":
    keep = set() if args.evals == "none" else set(args.evals.split("+"))
    if keep - set(config.evals):
      raise errors.ConfigError(f"config argument evals={args.evals!r}: unknown evaluations "
                               f"{sorted(keep - set(config.evals))}; choose from "
                               f"{sorted(config.evals)}")
    for name in set(config.evals) - keep:
      del config.evals[name]
  return config
