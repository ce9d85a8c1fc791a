"""Evaluation tasks of clipmed, one module per task, and the runner that drives them.

EVALUATORS maps the `task` field of a `config.evals.<name>` entry to its class. Each task module's
docstring lists its config fields and metrics. Result keys are "<name>/<dataset>/<metric>".
"""

from clipmed.evaluators.adversarial import Adversarial
from clipmed.evaluators.base import EvalContext, Evaluator, Metric, SplitData
from clipmed.evaluators.cxr_align import CxrAlign
from clipmed.evaluators.linear_probe import LinearProbe
from clipmed.evaluators.normal_detection import NormalDetection
from clipmed.evaluators.retrieval import Retrieval
from clipmed.evaluators.zero_shot import ZeroShot
from clipmed.evaluators.zero_shot_multiclass import ZeroShotMulticlass

EVALUATORS: dict[str, type[Evaluator]] = {
    "zero_shot": ZeroShot,
    "zero_shot_multiclass": ZeroShotMulticlass,
    "linear_probe": LinearProbe,
    "retrieval": Retrieval,
    "cxr_align": CxrAlign,
    "adversarial": Adversarial,
    "normal_detection": NormalDetection,
}

# Imported last: the runner reads EVALUATORS from this package.
from clipmed.evaluators.runner import EvalSource, Runner, build_evaluators  # noqa: E402


def check_evals_config(evals_config) -> None:
  """Raises ConfigError for a config.evals entry that cannot be built (before any work)."""
  build_evaluators(evals_config)


__all__ = ["EVALUATORS", "EvalContext", "EvalSource", "Evaluator", "Metric", "Runner",
           "SplitData", "build_evaluators", "check_evals_config"]
