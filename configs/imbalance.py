"""python -m clipmed.main --config=configs/imbalance.py --workdir=workdirs/imbalance_synth

The paper's Table 3 setting: the pre-training data made imbalanced by adding many normal studies.

  setting=synth (default, runs on a CPU): the demo's model on SynthCXR, where the train split is
    mixed 1:1 with its own normal studies (normal_only=True), so normal studies are drawn far more
    often than their share (about 30% of SynthCXR's train split) and repeat many times. With
    steps=1200 it is configs/synth_paper.py's budget; Table 3 compares row=clip with row=clip_dtc:
      python -m clipmed.main --config=configs/imbalance.py:row=clip,steps=1200 \\
          --workdir=workdirs/imb_clip
  setting=mimic: configs/full.py on MIMIC-CXR mixed with the user's own normal studies, prepared
    as a `csv` dataset (README, "Datasets"), e.g. 130k normal studies from a hospital:
      python -m input_pipeline.prepare --dataset=csv --manual_dir=/data/normals \\
          --csv=normals.csv --image_column=path --report_column=report --data_dir=/data/tfds
      python -m clipmed.main --config=configs/imbalance.py:setting=mimic,data_dir=/data/tfds,\\
          csv=normals.csv,image_column=path,report_column=report --workdir=workdirs/imbalance
    The csv options must be the ones it was prepared with. The weights default to the datasets'
    sizes in the paper's setting (about 243k frontal MIMIC-CXR images and 130k normal studies).

Arguments: `configs/imbalance.py:setting=synth|mimic,row=ROW,normal_weight=W,data_dir=PATH,
csv=FILE,image_column=C,report_column=C,steps=N`, where row names a Table 2 row of
configs/ablations.py (default: the full method, clip_ng_dtcg).
"""

from clipmed import errors
from configs import common, demo, full


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, setting="synth", normal_weight=-1.0, data_dir="data/tfds",
                          csv="", image_column="image_path", report_column="report", steps=0,
                          row="clip_ng_dtcg")
  if args.setting == "synth":
    config = demo.get_config(f"row={args.row}" + (f",steps={args.steps}" if args.steps else ""))
    weight = 1.0 if args.normal_weight < 0 else args.normal_weight
    config.data.mixture = [
        dict(name="synth_cxr", weight=1.0, options={}, normal_only=False),
        dict(name="synth_cxr", weight=weight, options={}, normal_only=True)]
  elif args.setting == "mimic":
    config = full.get_config(f"data_dir={args.data_dir},row={args.row}"
                             + (f",steps={args.steps}" if args.steps else ""))
    weight = 130.0 / 243.0 if args.normal_weight < 0 else args.normal_weight
    options = dict(image_column=args.image_column, report_column=args.report_column)
    if args.csv:
      options["csv"] = args.csv
    config.data.mixture = [
        dict(name="mimic_cxr", weight=1.0, options={}, normal_only=False),
        dict(name="csv", weight=weight, options=options, normal_only=False)]
  else:
    raise errors.ConfigError(f"config argument setting={args.setting!r}; choose synth or mimic")
  config.data.data_dir = args.data_dir
  return config
