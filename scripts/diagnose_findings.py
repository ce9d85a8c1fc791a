"""Where does a checkpoint lose finding-level discrimination: prompts, text tower or image tower?

    python scripts/diagnose_findings.py --config=configs/demo.py --workdir=workdirs/demo [--step=N]

Use the config (and arguments) the checkpoint was trained with. On the training dataset's test
split, with the zero-shot evaluation's prompts and classes (config.evals.zero_shot), it prints:

1. The zero-shot rule (positive minus negative prompt similarity) applied to the image embeddings
   (what the evaluation does) and to the report embeddings (the text tower alone), and the linear
   probe's test logits (the image features with supervision; from the saved examples when they
   are of the same step): each with
   within_image, image_mean_share and the mean AUROC of clipmed.evaluators.zero_shot. High on
   reports and low on images: the image side or the image-text alignment loses the findings.
2. The effective number of dimensions (participation ratio of the covariance eigenvalues) of the
   image and report embeddings: near 1-2 is an embedding that carries one "abnormality" score.
3. The text stream's soft-label targets (docs/METHOD.md: pairs with text similarity above
   tau_text are soft positives) by kind of pair, at the checkpoint and at initialisation (the
   config's seed): if nearly every pair is above tau_text, the targets are uniform and the text
   stream gives no signal to tell reports apart.
"""

import os
import sys

import numpy as np
from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from clipmed import console  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "The config the checkpoint was trained with (path[:key=value,...]).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "The training workdir (holds checkpoints/).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step; default: the latest.")
flags.mark_flags_as_required(["config", "workdir"])


def participation_ratio(emb: np.ndarray) -> float:
  """(sum of covariance eigenvalues)^2 / sum of their squares: 1 for a line, D for isotropy."""
  eig = np.clip(np.linalg.eigvalsh(np.cov(np.asarray(emb, np.float64).T)), 0.0, None)
  return float(eig.sum() ** 2 / np.sum(eig ** 2))


def finding_summary(scores, positive, counted, askable) -> str:
  from clipmed.evaluators import findings, metrics  # pylint: disable=g-import-not-at-top
  fraction, has_pair = findings.within_image_scores(scores, positive & counted, askable)
  share = findings.image_mean_share(scores, np.ones((1, scores.shape[0])))[0]
  aurocs = [metrics.auroc(positive[:, k], scores[:, k], counted[:, k])
            for k in range(scores.shape[1])]
  return (f"within_image {fraction[has_pair].mean():.3f}  image_mean_share {share:.3f}  "
          f"mean AUROC {np.nanmean(aurocs):.3f}")


def pair_kinds(labels: np.ndarray) -> dict[str, np.ndarray]:
  """[N, 14] CheXpert labeler values -> {kind: [N, N] bool} over the upper triangle of study
  pairs. Normal: the No Finding rule (normal_detection); shared findings ignore devices."""
  # pylint: disable=g-import-not-at-top
  from clipmed.evaluators.normal_detection import normal_mask
  from clipmed.report import chexpert
  abnormal = ~normal_mask(labels)
  present = labels == chexpert.POSITIVE
  present[:, [chexpert.NO_FINDING, chexpert.SUPPORT_DEVICES]] = False
  abnormal_pair = abnormal[:, None] & abnormal[None, :]
  shared = (present.astype(np.int64) @ present.T.astype(np.int64)) > 0
  upper = np.triu(np.ones((len(labels), len(labels)), bool), 1)
  return {"normal-normal": upper & ~abnormal[:, None] & ~abnormal[None, :],
          "normal-abnormal": upper & (abnormal[:, None] != abnormal[None, :]),
          "abnormal-abnormal sharing a finding": upper & abnormal_pair & shared,
          "abnormal-abnormal, no finding in common": upper & abnormal_pair & ~shared}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  console.setup_logging()
  # pylint: disable=g-import-not-at-top
  from clipmed import checkpointing, train
  from clipmed.evaluators import findings, prompt_sets, results, zero_shot
  from clipmed.normalize import l2_normalize

  config = console.config_value(_CONFIG)
  workdir = os.path.abspath(_WORKDIR.value)
  with console.user_errors_exit():
    s = train.setup(config, workdir, training=False)
    ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), keep=1,
                                      save_every_steps=0, async_save=False,
                                      save_data_iterator=False, read_only=True)
    step, state = ckpt.restore_state(s.state, _STEP.value)
    ckpt.close()
  embedder = train.make_embedder(config, s)
  context = train.make_runner(config, s).contexts(**embedder.bind(state.params))[config.data.name]
  data = context.split("test")
  zs = config.evals.zero_shot
  classes = list(zs.classes)
  prompts = prompt_sets.load_prompts(zs.prompts, classes)
  labels = data.labels[:, context.columns(classes, "config.evals.zero_shot.classes")]
  positive, counted = zero_shot.binary_targets(labels)
  askable = findings.askable_absent(positive & counted, ~positive & counted, classes)

  print(f"step {step}, logit scale {embedder.bind(state.params)['logit_scale']:.2f}, "
        f"{data.num_studies} test studies\n")
  print("1. the zero-shot rule on")
  print("   image embeddings (the evaluation):  " + finding_summary(
      prompt_sets.prompt_logits(context, data.image, prompts, classes), positive, counted,
      askable))
  print("   report embeddings (text tower):     " + finding_summary(
      prompt_sets.prompt_logits(context, data.report, prompts, classes), positive, counted,
      askable))
  probe = results.read_examples(workdir).get(("linear_probe", config.data.name))
  if (probe is not None and int(probe["step"]) == step
      and list(probe["study_ids"]) == list(data.study_ids)):
    probe_classes = [str(c) for c in probe["classes"]]
    if all(c in probe_classes for c in classes):
      scores = probe[f"scores_{probe['fractions'][-1]}"][:, [probe_classes.index(c)
                                                            for c in classes]]
      print(f"   linear probe ({probe['fractions'][-1]}) logits:       " + finding_summary(
          scores, positive, counted, askable))
  own = np.sum(data.image * data.report, axis=1)
  print(f"\n2. effective dimensions: images {participation_ratio(data.image):.1f}, reports "
        f"{participation_ratio(data.report):.1f} (of {data.image.shape[1]}); cos(image, own "
        f"report) {own.mean():.3f}, cos(image, any report) {(data.image @ data.report.T).mean():.3f}")

  tau = float(config.loss.thresholds.text)
  kinds = pair_kinds(data.labels)
  initial = l2_normalize(embedder.embed_texts(s.state.params, data.reports))
  print(f"\n3. report pairs with text similarity above tau_text = {tau} (soft positives of the "
        "text stream)")
  print(f"   {'pair kind':42s} {'pairs':>8s} {'checkpoint':>11s} {'initialisation':>15s}")
  for kind, mask in kinds.items():
    at_step = np.mean((data.report @ data.report.T)[mask] > tau)
    at_init = np.mean((initial @ initial.T)[mask] > tau)
    print(f"   {kind:42s} {int(mask.sum()):8d} {at_step:11.3f} {at_init:15.3f}")


if __name__ == "__main__":
  app.run(main, flags_parser=console.parse_flags)
