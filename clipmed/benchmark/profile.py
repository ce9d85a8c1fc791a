"""Where the train step's time goes: one step traced with jax.profiler, its events attributed to
the model's modules.

`python -m clipmed.benchmark train --config=... --profile DIR` writes the trace to DIR (open it in
TensorBoard's profile tab or in Perfetto) and adds a summary to the JSON line. Each trace event
named after an instruction of the compiled step (a fusion, a dot, a copy) is attributed through
that instruction's `op_name` metadata, which records the Flax module path and whether the op
belongs to the forward pass (`jvp(...)`), the backward pass (`transpose(jvp(...))`) or neither
(the optimiser's update of `state.params` / `state.opt_state`, the loss, everything else).

Event durations are summed per key. XLA:CPU may run independent instructions on both cores at
once, so the attributed total can exceed the step's wall time; compare shares, not sums with
step_ms. XLA:CPU names events after instructions only with `--xla_cpu_enable_xprof_traceme=true`
(TRACEME_FLAG, which the benchmark sets for --profile). Backends whose events carry other names
(GPU kernels) give an empty attribution; the trace itself is still written.
"""

import collections
import glob
import gzip
import json
import os
import re
from collections.abc import Callable

import jax

TRACEME_FLAG = "--xla_cpu_enable_xprof_traceme=true"

# An HLO instruction definition with op_name metadata: "%name = type op(...), ...op_name="...".
_INSTRUCTION = re.compile(r'^\s*(?:ROOT )?%([\w.\-]+) = .*?op_name="([^"]*)"')
_ENCODERS = (("CLIPModel.encode_image/", "image"), ("CLIPModel.encode_text/", "text"),
             ("CLIPModel.encode_graph/", "graph"))


def op_names(hlo_text: str) -> dict[str, str]:
  """Instruction name -> op_name metadata, from a compiled module's text (`compiled.as_text()`)."""
  names = {}
  for line in hlo_text.splitlines():
    match = _INSTRUCTION.match(line)
    if match:
      names[match.group(1)] = match.group(2)
  return names


def category(op_name: str) -> tuple[str, str]:
  """(phase, where) of an op_name, with block and layer indices collapsed to '*'.

  phase is "forward", "backward", "optimizer" or "other"; where is the module path inside the
  encoder plus the primitive, e.g. ("backward", "image/stage0_block*/mlp/fc1/dot_general").
  """
  if op_name.startswith(("state.params", "state.opt_state")):
    return "optimizer", "parameter and moment updates"
  if "transpose(jvp(" in op_name:
    phase = "backward"
  elif "jvp(" in op_name:
    phase = "forward"
  else:
    phase = "other"
  where = op_name
  for marker, encoder in _ENCODERS:
    if marker in where:
      where = encoder + "/" + where.split(marker, 1)[1]
      break
  else:
    where = "loss and heads/" + where.rsplit("/", 1)[-1]
  where = re.sub(r"_block\d+", "_block*", where)
  where = re.sub(r"layer\d+", "layer*", where)
  where = re.sub(r"^(image|text|graph)/(image|text|graph)_encoder/", r"\1/", where)
  return phase, where


def _trace_events(trace_dir: str) -> list[dict]:
  files = sorted(glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True))
  if not files:
    return []
  with gzip.open(files[-1], "rt") as f:
    trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  return [e for e in events if e.get("ph") == "X" and "dur" in e]


def attribute(events: list[dict], names: dict[str, str], top: int) -> dict[str, object]:
  """Sums event durations (ms) by (phase, where) and by phase + encoder.

  Args:
    events: complete ("X") trace events with "name" and "dur" (microseconds).
    names: instruction name -> op_name (op_names()).
    top: how many (phase, where) rows to keep, largest first.

  Returns:
    {"attributed_ms", "by_part": {"backward image": ms, ...}, "top": [[phase, where, ms, n]]}.
  """
  by_key = collections.Counter()
  count = collections.Counter()
  by_part = collections.Counter()
  for event in events:
    op_name = names.get(event["name"])
    if op_name is None:
      continue
    phase, where = category(op_name)
    ms = event["dur"] / 1e3
    by_key[(phase, where)] += ms
    count[(phase, where)] += 1
    by_part[f"{phase} {where.split('/', 1)[0]}" if phase in ("forward", "backward") else phase] += ms
  return {
      "attributed_ms": round(sum(by_key.values()), 2),
      "by_part": {k: round(v, 2) for k, v in by_part.most_common()},
      "top": [[phase, where, round(ms, 2), count[(phase, where)]]
              for (phase, where), ms in by_key.most_common(top)],
  }


def profile_step(run_step: Callable[[], object], hlo_text: str, trace_dir: str,
                 top: int = 25) -> dict[str, object]:
  """Traces one call of `run_step` into `trace_dir` and attributes it (see attribute())."""
  with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
    jax.block_until_ready(run_step())
  summary = attribute(_trace_events(trace_dir), op_names(hlo_text), top)
  return {"trace_dir": os.path.abspath(trace_dir), **summary}


def format_table(summary: dict[str, object]) -> str:
  """The attribution as aligned text lines (for the terminal; the JSON line has the numbers)."""
  total = float(summary["attributed_ms"]) or 1.0
  lines = [f"profile: {summary['attributed_ms']} ms attributed (trace: {summary['trace_dir']})"]
  for part, ms in summary["by_part"].items():
    lines.append(f"  {ms:9.1f} ms {100 * ms / total:5.1f}%  {part}")
  lines.append("  largest:")
  for phase, where, ms, n in summary["top"]:
    lines.append(f"  {ms:9.1f} ms {100 * ms / total:5.1f}% {n:4d}x  {phase:9s} {where}")
  return "\n".join(lines)
