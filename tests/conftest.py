"""Shared pytest fixtures and helpers."""

import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_with_devices(code: str, num_devices: int = 8, timeout: int = 600) -> str:
  """Runs `code` in a fresh Python process with `num_devices` forced CPU devices.

  JAX fixes the device count at start-up, so multi-device tests cannot run in the pytest process.
  Returns the subprocess's stdout; fails the test with its stderr when it exits non-zero.
  """
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={num_devices}"
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)
  if proc.returncode != 0:
    pytest.fail(f"subprocess with {num_devices} devices failed:\n{proc.stderr[-6000:]}")
  return proc.stdout
