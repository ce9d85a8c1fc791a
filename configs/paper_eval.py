"""python -m clipmed.evaluate --config=configs/paper_eval.py:base=full,data_dir=/data/tfds --workdir=workdirs/full

The paper's evaluation (Tables 2, 4, 5 and 6; clipmed/evaluators/paper.py) of a checkpoint trained
with configs/<base>.py: every (task, dataset) the tables report, each on its prepared benchmark in
data_dir. A benchmark that is not prepared is skipped with one line giving the command that
prepares it; the others run. results.md ends with the tables laid out like the paper's; compare
several runs with `python scripts/compare_results.py --paper A=workdirs/a B=workdirs/b`.

Arguments: `configs/paper_eval.py:base=full|demo|tiny,data_dir=PATH,dataset=NAME,num_bootstrap=N`
(dataset: the training dataset the checkpoint was trained on, when not the base's default).
"""

from clipmed import errors
from clipmed.evaluators import paper
from configs import common, demo, full, tiny

BASES = {"full": full, "demo": demo, "tiny": tiny}


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, base="full", data_dir="data/tfds", dataset="", num_bootstrap=1000)
  if args.base not in BASES:
    raise errors.ConfigError(f"config argument base={args.base!r}; choose one of "
                             f"{sorted(BASES)}")
  config = BASES[args.base].get_config()
  config.data.data_dir = args.data_dir
  if args.dataset:
    config.data.name = args.dataset
  config.evals = paper.paper_evals(num_bootstrap=args.num_bootstrap)
  return config
