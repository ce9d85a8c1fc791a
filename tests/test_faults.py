"""Faults while training, on real processes: SIGKILL at any moment, SIGTERM to one process and
to one of two processes, a full disk during a save, unusable workdirs. README: "What happens when
things go wrong" and "Several processes".

Every run is `python -m clipmed.main` (or, for two processes of 4 forced CPU devices each,
`train_and_evaluate` after `jax.distributed.initialize`) on configs/tiny.py, with every step's loss
in TensorBoard. Runs share a persistent compilation cache so that only the first one compiles.
"""

import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import ROOT, read_scalars

STEPS = 20
EVERY = 4  # checkpoint period: steps 4, 8, ..., 20
_TMP = ".orbax-checkpoint-tmp"


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
  cache = str(tmp_path_factory.mktemp("jax_cache"))
  return dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=cache,
              JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
              JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")


def _main_args(data_dir: str, workdir: str, *extra: str) -> list[str]:
  return [sys.executable, "-m", "clipmed.main",
          f"--config=configs/tiny.py:data_dir={data_dir},steps={STEPS},evals=retrieval",
          "--config.log_every_steps=1", f"--config.checkpoint_every_steps={EVERY}",
          f"--workdir={workdir}", *extra]


def _run(args: list[str], env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
  return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def baseline(tiny_data_dir, tmp_path_factory, env) -> tuple[str, dict[int, float]]:
  """(workdir, {step: loss}) of an uninterrupted run."""
  workdir = str(tmp_path_factory.mktemp("baseline"))
  proc = _run(_main_args(tiny_data_dir, workdir), env)
  assert proc.returncode == 0, proc.stderr[-4000:]
  losses = read_scalars(workdir, "train/loss")
  assert sorted(losses) == list(range(1, STEPS + 1))
  return workdir, losses


def _error_lines(stderr: str) -> list[str]:
  return [line for line in stderr.splitlines() if line.startswith("error: ")]


def _step_dirs(checkpoints: str) -> list[str]:
  return sorted(os.listdir(checkpoints)) if os.path.isdir(checkpoints) else []


def _finalized_steps(checkpoints: str) -> list[int]:
  """Steps Orbax renamed into place (its commit), independent of clipmed's own check."""
  return sorted(int(n) for n in _step_dirs(checkpoints) if n.isdigit())


class _Child:
  """A training process whose output (stdout and stderr) goes to a file, to be stopped at a chosen
  moment."""

  def __init__(self, args: list[str], env: dict[str, str], log: str):
    self._log = log
    self._text = ""
    with open(log, "w") as f:
      self.proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)

  def text(self) -> str:
    """Its output so far (read incrementally: this is polled every millisecond)."""
    with open(self._log, errors="replace") as f:
      f.seek(len(self._text.encode()))
      self._text += f.read()
    return self._text

  def kill_when(self, ready, confirm, timeout: float = 240) -> None:
    """SIGKILLs the process the first time `ready()` and, with the process frozen, `confirm()`.

    Freezing (SIGSTOP) before confirming makes the moment exact: nothing changes on disk between
    the check and the kill.
    """
    deadline = time.time() + timeout
    while time.time() < deadline:
      assert self.proc.poll() is None, "the run ended before the moment to kill it:\n" + \
          self.text()[-3000:]
      if ready():
        self.proc.send_signal(signal.SIGSTOP)
        _wait_stopped(self.proc.pid)
        if confirm():
          self.proc.kill()
          self.proc.wait(timeout=60)
          return
        self.proc.send_signal(signal.SIGCONT)
      time.sleep(0.001)
    self.proc.kill()
    pytest.fail("timed out waiting for the moment to kill the run")


def _wait_stopped(pid: int) -> None:
  for _ in range(2000):
    with open(f"/proc/{pid}/stat") as f:
      if f.read().rsplit(")", 1)[1].split()[0] in ("T", "t"):
        return
    time.sleep(0.001)
  raise AssertionError(f"process {pid} did not stop")


def _assert_same_losses(workdir: str, expected: dict[int, float]) -> None:
  losses = read_scalars(workdir, "train/loss")
  assert sorted(losses) == sorted(expected)
  different = {s: (losses[s], expected[s]) for s in expected if losses[s] != expected[s]}
  assert not different, f"(resumed, uninterrupted) losses differ at steps {different}"


def _resumed_step(output: str) -> int | None:
  match = re.search(r"Resumed from the checkpoint at step (\d+)", output)
  return int(match.group(1)) if match else None


@pytest.mark.slow
def test_sigkill_at_any_moment_resumes_from_the_latest_complete_checkpoint_exactly(
    tiny_data_dir, baseline, tmp_path, env):
  _, expected = baseline
  workdir = str(tmp_path / "run")
  checkpoints = os.path.join(workdir, "checkpoints")
  args = _main_args(tiny_data_dir, workdir)

  def saving() -> bool:
    return any(_TMP in n for n in _step_dirs(checkpoints))

  # (a) Between steps: after the first checkpoint, while no save is in flight.
  child = _Child(args, env, str(tmp_path / "a.log"))
  child.kill_when(lambda: _finalized_steps(checkpoints),
                  lambda: not saving() and STEPS not in _finalized_steps(checkpoints))
  kept = _finalized_steps(checkpoints)[-1]

  # (b) Inside an asynchronous save: its temporary directory is on disk.
  child = _Child(args, env, str(tmp_path / "b.log"))
  child.kill_when(saving, saving)
  assert _resumed_step(child.text()) == kept
  interrupted = [n for n in _step_dirs(checkpoints) if _TMP in n]
  kept = _finalized_steps(checkpoints)[-1]

  # (c) During the final evaluation (the last checkpoint is complete by then).
  child = _Child(args, env, str(tmp_path / "c.log"))
  child.kill_when(lambda: f"step {STEPS}: evaluating" in child.text(),
                  lambda: not os.path.exists(os.path.join(workdir, "results.json")))
  assert _resumed_step(child.text()) == kept
  warnings = [line for line in child.text().splitlines() if "Skipping incomplete" in line]
  assert len(warnings) == 1 and all(n in warnings[0] for n in interrupted), warnings
  assert not any(_TMP in n for n in _step_dirs(checkpoints))
  assert _finalized_steps(checkpoints)[-1] == STEPS

  proc = _run(args, env)
  assert proc.returncode == 0, proc.stderr[-4000:]
  assert _resumed_step(proc.stdout) == STEPS
  assert os.path.exists(os.path.join(workdir, "results.json"))
  _assert_same_losses(workdir, expected)


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_the_rerun_gives_the_uninterrupted_losses(
    tiny_data_dir, baseline, tmp_path, env):
  """One process, SIGTERM once training is under way (a preemption): it checkpoints the step it
  reached, exits 0 without evaluating, and the same command resumes there with every loss of the
  uninterrupted run, bit for bit."""
  _, expected = baseline
  workdir = str(tmp_path / "run")
  args = _main_args(tiny_data_dir, workdir)
  child = _Child(args, env, str(tmp_path / "term.log"))
  deadline = time.time() + 240
  while not re.search(r"^train: ", child.text(), re.M):  # plain progress lines: training
    assert time.time() < deadline and child.proc.poll() is None, child.text()[-3000:]
    time.sleep(0.005)
  child.proc.send_signal(signal.SIGTERM)
  assert child.proc.wait(timeout=300) == 0, child.text()[-4000:]
  stopped = re.findall(r"Stopped at step (\d+) after a preemption signal", child.text())
  assert len(stopped) == 1 and int(stopped[0]) < STEPS, child.text()[-3000:]
  stop = int(stopped[0])
  assert _finalized_steps(os.path.join(workdir, "checkpoints"))[-1] == stop
  assert not os.path.exists(os.path.join(workdir, "results.json"))

  proc = _run(args, env)
  assert proc.returncode == 0, proc.stderr[-4000:]
  assert _resumed_step(proc.stdout) == stop
  assert os.path.exists(os.path.join(workdir, "results.json"))
  _assert_same_losses(workdir, expected)


def _can_mount_tmpfs(path: str) -> bool:
  os.makedirs(path, exist_ok=True)
  try:
    mount = f"mount -t tmpfs -o size=64k tmpfs {path}"
    return subprocess.run(["unshare", "-rm", "sh", "-c", mount], capture_output=True,
                          timeout=30).returncode == 0
  except (OSError, subprocess.SubprocessError):
    return False


def _tmpfs_bytes(directory: str) -> int:
  """What `directory`'s files take on tmpfs (whole pages)."""
  total = 0
  for root, _, files in os.walk(directory):
    total += sum(-(-os.path.getsize(os.path.join(root, f)) // 4096) * 4096 for f in files)
  return total


@pytest.mark.slow
def test_full_disk_during_a_save_keeps_the_previous_checkpoint_and_exits_2(
    tiny_data_dir, baseline, tmp_path, env):
  """The checkpoints live on a real tmpfs with room for one checkpoint (a private mount namespace,
  no root needed), so the second save fails with ENOSPC inside TensorStore's writes."""
  base_workdir, expected = baseline
  workdir, out = tmp_path / "run", tmp_path / "out"
  checkpoints = workdir / "checkpoints"
  checkpoints.mkdir(parents=True)
  out.mkdir()
  if not _can_mount_tmpfs(str(tmp_path / "probe")):
    pytest.skip("cannot mount a tmpfs in a private namespace (`unshare -rm`) here")
  one = max(_tmpfs_bytes(os.path.join(base_workdir, "checkpoints", str(s)))
            for s in _finalized_steps(os.path.join(base_workdir, "checkpoints")))
  args = " ".join(_main_args(tiny_data_dir, str(workdir)))
  script = f"""
    mount -t tmpfs -o size={one * 14 // 10} tmpfs {checkpoints} || exit 97
    {args} 2> {out}/err1; echo $? > {out}/rc1
    cp -a {checkpoints} {out}/after_failure
    mount -o remount,size=64m {checkpoints} || exit 98
    {args} > {out}/out2 2> {out}/err2; echo $? > {out}/rc2
  """
  proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  err1 = (out / "err1").read_text()
  assert (out / "rc1").read_text().strip() == "2", err1[-4000:]
  lines = _error_lines(err1)  # Orbax and TensorStore print their own tracebacks around it
  assert len(lines) == 1, err1[-4000:]
  match = re.fullmatch(r"error: could not write the checkpoint for step (\d+) to \S+: No space "
                       r"left on device \(errno 28\); kept the complete checkpoint at step (\d+);"
                       r" .*rerun the same command to resume", lines[0])
  assert match, lines[0]
  failed, kept = int(match.group(1)), int(match.group(2))
  assert kept == failed - EVERY and kept in _finalized_steps(str(out / "after_failure"))
  assert all(s < failed for s in _finalized_steps(str(out / "after_failure")))

  err2 = (out / "err2").read_text()
  assert (out / "rc2").read_text().strip() == "0", err2[-4000:]
  assert _resumed_step((out / "out2").read_text()) == kept
  _assert_same_losses(str(workdir), expected)


@pytest.mark.slow
def test_workdir_of_a_different_model_is_refused_naming_the_parameter(
    tiny_data_dir, baseline, tmp_path, env):
  base_workdir, _ = baseline
  workdir = str(tmp_path / "copy")
  shutil.copytree(base_workdir, workdir)
  before = {n: os.path.getmtime(os.path.join(workdir, "checkpoints", n))
            for n in _step_dirs(os.path.join(workdir, "checkpoints"))}
  proc = _run(_main_args(tiny_data_dir, workdir, "--config.model.embed_dim=24"), env)
  assert proc.returncode == 2, proc.stderr[-4000:]
  assert "Traceback" not in proc.stderr
  lines = _error_lines(proc.stderr)
  assert len(lines) == 1, proc.stderr[-3000:]
  assert re.fullmatch(r"error: the checkpoint at step 20 in \S+ is from another model: "
                      r"params/\S+ has shape \(\d+, 16\) there but \(\d+, 24\) in this config "
                      r"\(and \d+ more differences\); train this config with a new --workdir, .*",
                      lines[0]), lines[0]
  after = {n: os.path.getmtime(os.path.join(workdir, "checkpoints", n))
           for n in _step_dirs(os.path.join(workdir, "checkpoints"))}
  assert after == before


@pytest.mark.slow
def test_unwritable_workdir_fails_before_data_preparation(tmp_path, env):
  tiny_data_dir = str(tmp_path / "no_data")  # never prepared: the run must stop before
  blocker = tmp_path / "a_file"
  blocker.write_text("not a directory")
  proc = _run(_main_args(tiny_data_dir, str(blocker / "run")), env)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert _error_lines(proc.stderr) == [
      f"error: cannot write to --workdir={blocker}/run: Not a directory; choose a directory you "
      f"can create and write to"]
  assert "Traceback" not in proc.stderr
  assert "Model:" not in proc.stdout and not os.path.exists(tiny_data_dir)  # nothing was set up

  readonly = tmp_path / "readonly"
  if not _can_mount_tmpfs(str(readonly)):
    pytest.skip("cannot mount a read-only tmpfs in a private namespace here")
  args = " ".join(_main_args(tiny_data_dir, str(readonly)))
  proc = subprocess.run(["unshare", "-rm", "sh", "-c",
                         f"mount -t tmpfs -o ro tmpfs {readonly} && exec {args}"],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert _error_lines(proc.stderr) == [
      f"error: cannot write to --workdir={readonly}: Read-only file system; choose a directory "
      f"you can create and write to"]
  assert "Model:" not in proc.stdout and not os.path.exists(tiny_data_dir)


# The multi-process runs: configs/tiny.py with dropout and drop-path on (their masks are drawn by
# global batch position, so they see whether each process holds the right rows of the global
# batch) and two cheap evaluations.
_CONFIG_ARG = "configs/tiny.py:data_dir={data_dir},steps={steps},evals=zero_shot+retrieval"
_OVERRIDES = {"log_every_steps": 1, "model.text.dropout": 0.1, "model.image.drop_path_rate": 0.1}

# One process with 8 devices: a straight training run of the same config (its losses), then the
# evaluation of the two-process run's final checkpoint (a copy of its workdir).
_ONE_PROCESS_RUN = """
import json
from clipmed import train
from configs import tiny
from tests.conftest import read_scalars
config = tiny.get_config("{config_arg}".split(":", 1)[1])
{overrides}
straight = config.copy_and_resolve_references()
straight.evals = type(config.evals)()  # the losses only
train.train_and_evaluate(straight, "{workdir}")
train.evaluate_checkpoint(config, "{evaluated}")
print(json.dumps(read_scalars("{workdir}", "train/loss")))
"""

DEVICES_PER_PROCESS = 4


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _start_two(data_dir: str, workdir: str, steps: int, env: dict[str, str], logs: str
               ) -> list[_Child]:
  """`python -m clipmed.main --distributed` twice, as launch/local_processes.sh runs it."""
  port = _free_port()
  env = dict(env, CLIPMED_VERBOSE="1",  # INFO lines: clu's per-step scalars, the eval's counts
             XLA_FLAGS=f"--xla_force_host_platform_device_count={DEVICES_PER_PROCESS}")
  children = []
  for i in (0, 1):
    args = [sys.executable, "-m", "clipmed.main",
            "--config=" + _CONFIG_ARG.format(data_dir=data_dir, steps=steps),
            *(f"--config.{key}={value}" for key, value in _OVERRIDES.items()),
            f"--workdir={workdir}", "--distributed", f"--coordinator_address=localhost:{port}",
            "--num_processes=2", f"--process_id={i}"]
    children.append(_Child(args, env, f"{logs}.{i}.log"))
  return children


def _finish(children: list[_Child], timeout: int = 600) -> list[str]:
  for child in children:
    child.proc.wait(timeout=timeout)
  for i, child in enumerate(children):
    assert child.proc.returncode == 0, f"process {i}:\n{child.text()[-4000:]}"
  return [child.text() for child in children]


def _examples(workdir: str) -> dict[str, dict]:
  """{path under examples/: {key: array}} of a workdir's per-example arrays."""
  root = os.path.join(workdir, "examples")
  out = {}
  for path in sorted(glob.glob(os.path.join(root, "*", "*.npz"))):
    with np.load(path) as npz:
      out[os.path.relpath(path, root)] = {key: npz[key] for key in npz.files}
  return out


@pytest.mark.slow
def test_two_processes_of_four_devices_stop_resume_and_evaluate_like_one_of_eight(
    tiny_data_dir, tmp_path, env):
  """Two local processes (jax.distributed, 4 forced CPU devices each): SIGTERM to one stops both at
  the same step; rerunning resumes; every step's loss equals that of one process with 8 devices
  to float rounding (rel 1e-5; see the README, "Several processes"); at the evaluation each
  process embeds only its half of the test split, and results.json and the per-example arrays are
  exactly those of the one-process evaluation of the same checkpoint."""
  steps = 8
  workdir = str(tmp_path / "run")
  children = _start_two(tiny_data_dir, workdir, steps, env, str(tmp_path / "run"))
  deadline = time.time() + 300
  while not re.search(r"\] \[2\] .*train/loss=", children[1].text()):  # process 1 is training
    assert time.time() < deadline and children[1].proc.poll() is None, children[1].text()[-3000:]
    time.sleep(0.005)
  children[1].proc.send_signal(signal.SIGTERM)
  logs = _finish(children)
  stopped = [re.findall(r"Stopped at step (\d+) after a preemption signal", log) for log in logs]
  assert stopped[0] == stopped[1] and len(stopped[0]) == 1, stopped
  stop = int(stopped[0][0])
  assert 2 <= stop < steps
  assert "Received signal 15" in logs[1] and "Received signal 15" not in logs[0]
  assert _finalized_steps(os.path.join(workdir, "checkpoints"))[-1] == stop

  logs = _finish(_start_two(tiny_data_dir, workdir, steps, env, str(tmp_path / "resume")))
  assert [_resumed_step(log) for log in logs] == [stop, stop]
  for log in logs:  # 24 test images, 12 embedded by each process
    embedded = re.findall(r"eval: embedded the (\d+) images of synth_cxr/test in .* \((\d+) of "
                          r"them on this process\)", log)
    assert embedded == [("24", "12")], embedded

  evaluated = str(tmp_path / "evaluated")  # the two-process workdir, evaluated by one process
  shutil.copytree(workdir, evaluated)
  os.remove(os.path.join(evaluated, "results.json"))
  code = _ONE_PROCESS_RUN.format(
      config_arg=_CONFIG_ARG.format(data_dir=tiny_data_dir, steps=steps),
      overrides="\n".join(f"config.{key} = {value!r}" for key, value in _OVERRIDES.items()),
      workdir=tmp_path / "one", evaluated=evaluated)
  proc = _run([sys.executable, "-c", code],
              dict(env, XLA_FLAGS="--xla_force_host_platform_device_count=8"))
  assert proc.returncode == 0, proc.stderr[-4000:]
  expected = {int(k): v for k, v in json.loads(proc.stdout.strip().splitlines()[-1]).items()}
  losses = read_scalars(workdir, "train/loss")
  assert sorted(losses) == sorted(expected) == list(range(1, steps + 1))
  for step, loss in expected.items():
    assert losses[step] == pytest.approx(loss, rel=1e-5, abs=0), (step, losses, expected)
  gaps = {s: abs(losses[s] - loss) for s, loss in expected.items()}  # the README quotes them
  print(f"largest loss difference from one process: {max(gaps.values()):.2g} "
        f"({max(gaps[s] / abs(loss) for s, loss in expected.items()):.2g} relative)")

  with open(os.path.join(workdir, "results.json")) as f, \
       open(os.path.join(evaluated, "results.json")) as g:
    assert json.load(f) == json.load(g)
  two, one = _examples(workdir), _examples(evaluated)
  assert sorted(two) == sorted(one) == ["retrieval/synth_cxr.npz", "zero_shot/synth_cxr.npz"]
  for name, arrays in two.items():
    assert sorted(arrays) == sorted(one[name])
    for key, value in arrays.items():
      np.testing.assert_array_equal(value, one[name][key], err_msg=f"{name}: {key}")
