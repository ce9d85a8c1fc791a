"""python -m clipmed.main --config=configs/ablations.py:row=clip_ng_dtcg --workdir=workdirs/clip_ng_dtcg

One config per row of the paper's Table 2, plus SoftCLIP, on the demo's model and data (SynthCXR):

  row=clip          CLIP (InfoNCE)
  row=clip_dt       CLIP-D_t          soft labels from report-text similarity
  row=clip_dtc      CLIP-D_{t+c}      + clinical (CheXpert-14) similarity
  row=clip_n        CLIP^N            negation hard-negative reports
  row=clip_n_dtc    CLIP^N-D_{t+c}
  row=clip_g        CLIP^G            report-graph encoder, one-hot targets
  row=clip_g_dtcg   CLIP^G-D_{t+c+g}
  row=clip_ng_dtcg  CLIP^{N,G}-D_{t+c+g}   the full method
  row=softclip      SoftCLIP          soft labels from self-similarity without thresholds

Other arguments as in configs/demo.py: `:row=clip_n_dtc,steps=400,batch=64`.
"""

from configs import common, demo


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, row="clip_ng_dtcg", steps=demo.DEFAULT_STEPS,
                          batch=demo.DEFAULT_BATCH)
  return demo.get_config(f"steps={args.steps},batch={args.batch},row={args.row}")
