"""Smoke test of the benchmark CLI (tiny batch)."""

import json
import os
import subprocess
import sys

import pytest

from clipmed import benchmark
from clipmed.benchmark import profile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_loss(batch, devices, dim=8):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  proc = subprocess.run(
      [sys.executable, "-m", "clipmed.benchmark", "loss", "--batch", str(batch), "--dim",
       str(dim), "--devices", str(devices), "--repeats", "1"], cwd=ROOT, env=env,
      capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = proc.stdout.strip().splitlines()
  assert len(lines) == 1, proc.stdout
  return json.loads(lines[0])


def test_loss_subcommand_prints_one_json_line():
  result = _run_loss(16, 2)
  assert result["batch"] == 16 and result["devices"] == 2
  assert result["loss_bytes_per_device"] > 0 and result["loss_ms"] > 0


@pytest.mark.slow
def test_loss_memory_per_device_falls_with_devices():
  one, eight = _run_loss(256, 1, dim=16), _run_loss(256, 8, dim=16)
  assert eight["devices"] == 8
  assert one["loss_bytes_per_device"] >= 4 * eight["loss_bytes_per_device"], (one, eight)


def test_subcommands_are_an_explicit_dict():
  assert "loss" in benchmark.SUBCOMMANDS
  args = benchmark.build_parser().parse_args(["loss", "--batch", "8"])
  assert args.command == "loss" and args.batch == 8 and args.devices is None


def test_wordpiece_subcommand_on_a_small_corpus():
  args = benchmark.build_parser().parse_args(
      ["wordpiece", "--reports", "50", "--vocab-size", "300"])
  result = benchmark.run_wordpiece(args)
  assert result["corpus"] == "synthetic" and result["reports"] == 50
  assert result["vocab_len"] == 300 and result["words"] >= 50 * 60
  assert result["train_s"] >= 0 and result["learn_cpu_s"] >= 0


def test_prepare_and_embed_subcommands(tmp_path):
  from tests.fakes import mimic_cxr  # pylint: disable=g-import-not-at-top
  download = mimic_cxr.write(str(tmp_path / "download"))
  args = benchmark.build_parser().parse_args(
      ["prepare", "--dataset", "mimic_cxr", "--manual_dir", download, "--image_size", "64",
       "--max_reject_fraction", "0.6"])
  result = benchmark.run_prepare(args)
  # The fake keeps 6 frontal images of 6 studies (tests/test_builder_mimic_cxr.py counts them).
  assert (result["studies"], result["images"], result["rejected"]) == (6, 6, 4)
  assert result["studies_per_s"] > 0 and result["mb_per_10k_studies"] > 0
  embed = benchmark.run_embed(benchmark.build_parser().parse_args(
      ["embed", "--config", "tiny", "--batch", "4", "--repeats", "1"]))
  assert embed["image_size"] == 64 and embed["images_per_s"] > 0


def _benchmark(*argv, devices=None):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(PYTHONPATH=ROOT, HF_HUB_OFFLINE="1")
  extra = ["--devices", str(devices)] if devices else []
  return subprocess.run([sys.executable, "-m", "clipmed.benchmark", *argv, *extra], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=900, check=False)


@pytest.mark.slow
def test_train_subcommand_times_the_real_step_with_config_overrides(tmp_path):
  trace_dir = tmp_path / "trace"
  proc = _benchmark("train", f"--config=configs/tiny.py:data_dir={tmp_path}",
                    "--config.grad_accum_steps=2", "--batch", "8", "--steps", "2",
                    "--peak_tflops", "0.01", "--profile", str(trace_dir), devices=2)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = proc.stdout.strip().splitlines()
  assert len(lines) == 1, proc.stdout
  result = json.loads(lines[0])
  assert (result["batch"], result["devices"], result["grad_accum_steps"]) == (8, 2, 2)
  step = result["step_ms"]
  assert 0 < step["min"] <= step["median"] <= step["max"]
  assert result["samples_per_s"] == pytest.approx(8 / step["median"] * 1e3, rel=1e-3)
  assert result["peak_flops"] == pytest.approx(2 * 0.01e12)
  assert result["mfu"] == pytest.approx(
      result["model_flops_per_step"] / (step["median"] / 1e3) / result["peak_flops"], rel=1e-2)
  assert result["model_flops_per_step"] > 1e6 and result["peak_memory_bytes"] > 0
  assert result["compile_s"] > 0 and result["row"] == "clip"
  assert not (tmp_path / "synth_cxr").exists()  # random batch: no data generated
  # --profile: a trace TensorBoard reads, and its time attributed to both encoders, both passes.
  profiled = result["profile"]
  assert list(trace_dir.glob("plugins/profile/*/*.xplane.pb"))
  assert {"forward image", "backward image", "forward text", "backward text"} <= set(
      profiled["by_part"])
  assert sum(profiled["by_part"].values()) == pytest.approx(profiled["attributed_ms"], abs=0.5)
  assert profiled["attributed_ms"] > 0 and len(profiled["top"]) == 25
  assert all(phase in ("forward", "backward", "optimizer", "other") and ms >= 0 and n >= 1
             for phase, _, ms, n in profiled["top"])
  assert "profile:" in proc.stderr and "largest:" in proc.stderr


def test_profile_attributes_events_by_module_and_pass():
  hlo = "\n".join([
      '  %fusion.1 = f32[8,96]{1,0} fusion(%a), kind=kCustom, metadata={op_name="jit(train_step)/'
      'jvp(CLIPModel)/CLIPModel.encode_image/image_encoder/stage0_block1/mlp/fc1/dot_general"}',
      '  ROOT %dot.2 = f32[8,96]{1,0} dot(%a, %b), metadata={op_name="jit(train_step)/transpose('
      'jvp(CLIPModel))/CLIPModel.encode_image/image_encoder/stage0_block0/mlp/fc1/dot_general"}',
      '  %add.3 = f32[96]{0} add(%c, %d), metadata={op_name="state.opt_state[1][0].mu[\'x\']"}',
      '  %copy.4 = f32[96]{0} copy(%c), metadata={op_name="jit(train_step)/transpose(jvp('
      'CLIPModel))/CLIPModel.encode_text/text_encoder/layer11/attention/query/dot_general"}',
      "  %tuple.5 = (f32[96]) tuple(%copy.4)"])
  names = profile.op_names(hlo)
  assert set(names) == {"fusion.1", "dot.2", "add.3", "copy.4"}
  events = [{"name": "fusion.1", "dur": 3000}, {"name": "dot.2", "dur": 5000},
            {"name": "dot.2", "dur": 1000}, {"name": "add.3", "dur": 500},
            {"name": "copy.4", "dur": 250}, {"name": "tuple.5", "dur": 9000},
            {"name": "ThunkExecutor::Execute", "dur": 99000}]
  summary = profile.attribute(events, names, top=3)
  assert summary["attributed_ms"] == 9.75  # events of no instruction with metadata are left out
  assert summary["by_part"] == {"backward image": 6.0, "forward image": 3.0, "optimizer": 0.5,
                                "backward text": 0.25}
  assert summary["top"] == [["backward", "image/stage0_block*/mlp/fc1/dot_general", 6.0, 2],
                            ["forward", "image/stage0_block*/mlp/fc1/dot_general", 3.0, 1],
                            ["optimizer", "parameter and moment updates", 0.5, 1]]
  assert profile.category("jit(train_step)/jvp()/jit(log_softmax)/reduce_max") == (
      "forward", "loss and heads/reduce_max")


def test_train_subcommand_reports_a_bad_config_in_one_line():
  proc = _benchmark("train", "--config=configs/full.py:row=nope")
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1].startswith("error: unknown ablation row 'nope'")


def test_input_and_eval_subcommands(tiny_data_dir):
  config = [f"--config=configs/tiny.py:data_dir={tiny_data_dir}"]
  args = benchmark.build_parser().parse_args(["input", "--batches", "3"])
  args.config_dict = benchmark._load_config(config)  # pylint: disable=protected-access
  result = benchmark.run_input(args)
  assert result["batches"] == 3 and result["samples_per_s"] > 0 and not result["negatives"]
  args = benchmark.build_parser().parse_args(["eval", "--batch", "4", "--repeats", "1"])
  args.config_dict = benchmark._load_config(config)  # pylint: disable=protected-access
  result = benchmark.run_eval(args)
  assert result["batch"] == 4 and result["images_per_s"] > 0 and result["reports_per_s"] > 0


def test_the_pytorch_matmul_comparison_times_the_same_products():
  """scripts/bench_pytorch.py --matmuls: each product in its three train-step forms, both
  libraries computing the same result."""
  pytest.importorskip("torch")
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location(
      "bench_pytorch", os.path.join(ROOT, "scripts", "bench_pytorch.py"))
  bench_pytorch = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(bench_pytorch)
  rows = bench_pytorch.time_matmuls({"small": (6, 4, 5)}, repeats=1)
  assert [(r["product"], r["form"]) for r in rows] == [
      ("small", "x @ w"), ("small", "g @ w.T"), ("small", "x.T @ g")]
  for row in rows:
    assert row["shape"] == [6, 4, 5] and {"torch_ms", "jax_ms", "torch_gflops_per_s",
                                           "jax_gflops_per_s"} <= set(row)
    assert row["relative_difference"] < 1e-5
  assert set(bench_pytorch.MATMULS) >= {"bert_ffn_in", "swin_stage1_mlp_in"}
