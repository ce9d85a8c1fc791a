"""Device mesh and the mapping from logical axis names to mesh axes.

Parameters and activations are annotated with the logical names below (flax.linen partitioning);
`config.mesh.rules` maps them to mesh axes, so the same model shards data-parallel on a CPU and
fully-sharded on a pod by changing the config only.
"""

from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from clipmed import errors

# Logical axis names used by the models and the train step.
BATCH = "batch"        # examples in a batch
LENGTH = "length"      # tokens / patches along a sequence
EMBED = "embed"        # model width (hidden size)
MLP = "mlp"            # feed-forward inner width
HEADS = "heads"        # attention heads
KV = "kv"              # per-head width
VOCAB = "vocab"        # token vocabulary
CHANNELS = "channels"  # convolution input channels
JOINT = "joint"        # shared image-text embedding width
NORM = "norm"          # layer-norm scales and biases
RELPOS = "relpos"      # relative-position bias table entries

LOGICAL_AXES = (BATCH, LENGTH, EMBED, MLP, HEADS, KV, VOCAB, CHANNELS, JOINT, NORM, RELPOS)


def create_mesh(mesh_config) -> Mesh:
  """Builds the device mesh named by `config.mesh.shape` (an ordered {axis: size} mapping).

  One size may be -1: it takes all remaining devices. Axes are `AxisType.Auto` so that XLA
  propagates shardings through the model (the losses shard explicitly with shard_map).

  Raises:
    ValueError: when the sizes do not multiply to the number of devices.
  """
  names = tuple(mesh_config.shape.keys())
  sizes = [int(s) for s in mesh_config.shape.values()]
  num_devices = jax.device_count()
  if sizes.count(-1) > 1:
    raise errors.ConfigError(f"config.mesh.shape {dict(mesh_config.shape)}: at most one axis may "
                             "be -1")
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if num_devices % known:
      raise errors.ConfigError(f"config.mesh.shape {dict(mesh_config.shape)} does not divide the "
                               f"{num_devices} devices")
    sizes[sizes.index(-1)] = num_devices // known
  if int(np.prod(sizes)) != num_devices:
    raise errors.ConfigError(f"config.mesh.shape {dict(mesh_config.shape)} needs "
                             f"{int(np.prod(sizes))} devices, but {num_devices} are available; set "
                             f"sizes that multiply to {num_devices} or use -1 for one axis")
  return jax.make_mesh(tuple(sizes), names, axis_types=(AxisType.Auto,) * len(names))


def logical_rules(mesh_config) -> tuple[tuple[str, str | None], ...]:
  """The config's logical -> mesh axis rules; unlisted logical axes are replicated."""
  rules = tuple((str(logical), None if mesh_axis is None else str(mesh_axis))
                for logical, mesh_axis in mesh_config.rules)
  for logical, mesh_axis in rules:
    if logical not in LOGICAL_AXES:
      raise errors.ConfigError(f"config.mesh.rules names unknown logical axis {logical!r}; "
                               f"known: {LOGICAL_AXES}")
    if mesh_axis is not None and mesh_axis not in mesh_config.shape:
      raise errors.ConfigError(f"config.mesh.rules maps {logical!r} to {mesh_axis!r}, which is "
                               "not an "
                               f"axis of config.mesh.shape {tuple(mesh_config.shape.keys())}")
  return rules


def data_axes(mesh_config) -> tuple[str, ...]:
  """Mesh axes that the batch dimension is sharded over."""
  axes = tuple(m for logical, m in logical_rules(mesh_config) if logical == BATCH and m)
  return axes or tuple(mesh_config.shape.keys())[:1]


def data_parallel_size(mesh_config) -> int:
  """Devices the batch axis is split over (config.mesh sizes of the data axes; -1 = all the
  devices the other axes leave)."""
  sizes = {str(k): int(v) for k, v in mesh_config.shape.items()}
  if -1 in sizes.values():
    known = int(np.prod([v for v in sizes.values() if v != -1]))
    sizes = {k: (jax.device_count() // max(known, 1) if v == -1 else v) for k, v in sizes.items()}
  return int(np.prod([sizes[a] for a in data_axes(mesh_config)]))


def batch_sharding(mesh: Mesh, mesh_config) -> NamedSharding:
  """Sharding of arrays whose leading axis is the global batch."""
  return NamedSharding(mesh, P(data_axes(mesh_config)))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def axis_size(mesh: Mesh, axes: Sequence[str]) -> int:
  return int(np.prod([mesh.shape[a] for a in axes]))
