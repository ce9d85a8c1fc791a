"""python -m clipmed.main --config=configs/full.py:data_dir=/data/tfds,manual_dir=/data/mimic-cxr-jpg --workdir=workdirs/full

The paper's full method, CLIP^{N,G}-D_{t+c+g}, at paper scale: Swin-T (ImageNet) at 224 px and
Bio_ClinicalBERT, global batch 128, dynamic soft labels from text, clinical and graph similarity,
negation hard negatives and the report-graph encoder, trained on MIMIC-CXR (frontal images).

Prepare the data once (README, "Datasets"):
    python -m input_pipeline.prepare --dataset=mimic_cxr --manual_dir=/data/mimic-cxr-jpg \
        --data_dir=/data/tfds --workers=16
Another report dataset in one argument: `configs/full.py:dataset=chexpert_plus` (or openi, csv,
synth_cxr); a dataset that is not prepared stops before compiling with the prepare command.

Pretrained weights are named by hub id and downloaded on first use. On an air-gapped cluster,
download them elsewhere and point the config at the directories:

    hf download microsoft/swin-tiny-patch4-window7-224 --local-dir /models/swin-t
    hf download emilyalsentzer/Bio_ClinicalBERT --local-dir /models/bio_clinicalbert
    python -m clipmed.main --config=configs/full.py --workdir=... \\
      --config.model.image.init=/models/swin-t \\
      --config.model.text.init=/models/bio_clinicalbert --config.data.tokenizer=/models/bio_clinicalbert

(a timm `swin_tiny_patch4_window7_224` .safetensors file works for image.init too). Without network
and without local paths the run stops before compiling and says what to download.

Arguments: `configs/full.py:dataset=mimic_cxr,batch=128,steps=30000,data_dir=PATH,
manual_dir=PATH,row=clip_ng_dtcg`, where row names a Table 2 row of configs/ablations.py (the
default is the full method; `row=clip` is plain InfoNCE at the same scale).

Compute is bfloat16 on GPU/TPU and float32 on CPU (`config.model.dtype="auto"`; parameters,
gradients and the optimizer state are float32 everywhere). When the batch does not fit, the run
stops before the first step and says what would fit (`config.grad_accum_steps`, `config.model.remat`
and its `remat_policy`; README, "Will it fit?").
"""

from configs import common

SWIN_T = "microsoft/swin-tiny-patch4-window7-224"
BIO_CLINICAL_BERT = "emilyalsentzer/Bio_ClinicalBERT"


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, dataset="mimic_cxr", batch=128, steps=30000, data_dir="data/tfds",
                          manual_dir="", row="clip_ng_dtcg")
  config = common.base_config()

  # Data: the image is replicated to the 3 channels the ImageNet encoder expects and normalised
  # with the ImageNet statistics averaged over channels (the three channels of a radiograph are
  # equal). Real datasets are prepared at 512 px and cropped/resized to 224 by the pipeline.
  config.data.name = args.dataset
  config.data.data_dir = args.data_dir
  config.data.manual_dir = args.manual_dir
  config.data.synth.image_size = 224
  config.data.image_size = 224
  config.data.channels = 3
  config.data.mean, config.data.std = 0.449, 0.226
  config.data.max_text_length = 128
  config.data.tokenizer = BIO_CLINICAL_BERT

  model = config.model
  model.embed_dim = 512
  model.dtype = "auto"
  model.projection = "mlp"
  model.image.update(dict(patch_size=4, embed_dim=96, depths=(2, 2, 6, 2),
                          num_heads=(3, 6, 12, 24), window_size=7, drop_path_rate=0.1,
                          init=SWIN_T))
  model.text.update(dict(vocab_size=0, hidden_size=768, num_layers=12, num_heads=12,
                         intermediate_size=3072, max_position_embeddings=512, dropout=0.1,
                         pooling="cls", init=BIO_CLINICAL_BERT))

  common.apply_row(config, args.row)

  config.batch_size = args.batch
  config.num_train_steps = args.steps
  config.optimizer.update(dict(learning_rate=5e-5, warmup_steps=1000, weight_decay=0.05))
  config.log_every_steps = 50
  config.checkpoint_every_steps = 1000
  config.eval_batch_size = 256
  for block in config.evals.values():
    block.every_steps = 5000
  return config
