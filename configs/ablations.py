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

# Thresholds and weights of the soft-label streams (METHOD.md leaves them to the project). Chosen
# on SynthCXR by the sweep recorded in the README ("Ablations").
THRESHOLDS = dict(text=0.9, clinical=0.75, graph=0.9)
WEIGHTS = dict(text=1.0, clinical=0.5, graph=0.5)

ROWS = {
    # name: (soft-label streams, hard negatives, graph encoder)
    "clip": ((), False, False),
    "clip_dt": (("text",), False, False),
    "clip_dtc": (("text", "clinical"), False, False),
    "clip_n": ((), True, False),
    "clip_n_dtc": (("text", "clinical"), True, False),
    "clip_g": ((), False, True),
    "clip_g_dtcg": (("text", "clinical", "graph"), False, True),
    "clip_ng_dtcg": (("text", "clinical", "graph"), True, True),
    "softclip": (("text",), False, False),
}


def apply_row(config, row: str, *, thresholds=None, weights=None) -> None:
  """Sets config.loss / config.model.graph for one ablation row (in place)."""
  if row not in ROWS:
    raise ValueError(f"unknown ablation row {row!r}; choose one of {sorted(ROWS)}")
  thresholds = dict(THRESHOLDS if thresholds is None else thresholds)
  weights = dict(WEIGHTS if weights is None else weights)
  streams, hard_negatives, graph = ROWS[row]
  loss = config.loss
  loss.hard_negatives = hard_negatives
  config.model.graph.enabled = graph
  # The text stream always contributes (with tau >= 1 its targets are the identity: InfoNCE).
  loss.thresholds = {k: common.INFONCE_THRESHOLD for k in ("text", "clinical", "graph")}
  loss.weights = dict(text=weights["text"] if streams else 1.0, clinical=0.0, graph=0.0)
  for stream in streams:
    loss.thresholds[stream] = thresholds[stream]
    loss.weights[stream] = weights[stream]
  loss.soft_labels = "softclip" if row == "softclip" else "dynamic"
  # Hard negatives are cleaned reports; train on cleaned reports in every row so that rows differ
  # only in the loss (and the model cannot tell negatives by format).
  config.data.text_field = "report_clean"


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, row="clip_ng_dtcg", steps=demo.DEFAULT_STEPS,
                          batch=demo.DEFAULT_BATCH)
  config = demo.get_config(f"steps={args.steps},batch={args.batch}")
  apply_row(config, args.row)
  return config
