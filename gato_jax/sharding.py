"""The mesh, the logical-axis rules, and parameters created directly in their shards.

Model code names what each axis means (`batch`, `embed`, `mlp`, ...). One table of rules
in config (`config.axis_rules`, see configs/common.py) maps those names onto the mesh axes
`data`, `fsdp` and `tensor`; changing a run's parallelism is a config change.

A rule maps a logical name to a mesh axis, a tuple of mesh axes, or None (replicated).
Names without a rule are replicated. A mesh axis is used at most once per array: when two
dimensions of an array would land on the same mesh axis, the first one keeps it (so
activations [batch, length, embed] put `fsdp` on batch, and parameters [embed, mlp] put it
on embed). A parameter dimension that a mesh axis does not divide is left unsplit rather
than padded, so odd sizes never block a run; `unsplit_parameters` lists them.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ('data', 'fsdp', 'tensor')
Rules = Sequence[tuple[str, Any]]

# ----------------------------------------------------------------------------------------
# Mesh
# ----------------------------------------------------------------------------------------


def mesh_shape(config: Any, num_devices: int) -> tuple[int, ...]:
  """(data, fsdp, tensor) sizes from `config.mesh`; one of them may be -1 (the rest)."""
  sizes = {}
  for axis in MESH_AXES:
    value = getattr(config.mesh, axis, 1)
    if not isinstance(value, int) or (value < 1 and value != -1):
      raise ValueError(f'config key mesh.{axis} must be a positive int or -1, got {value!r}')
    sizes[axis] = value
  fill = [axis for axis, v in sizes.items() if v == -1]
  if len(fill) > 1:
    raise ValueError(f'only one of config keys mesh.{{data,fsdp,tensor}} may be -1, got '
                     f'{", ".join("mesh." + a for a in fill)}')
  fixed = math.prod(v for v in sizes.values() if v != -1)
  if fill:
    if num_devices % fixed:
      raise ValueError(
          f'config key mesh.{fill[0]}=-1 cannot fill {num_devices} devices: the other mesh '
          f'axes multiply to {fixed}, which does not divide {num_devices}')
    sizes[fill[0]] = num_devices // fixed
  elif fixed != num_devices:
    raise ValueError(
        f'config keys mesh.data*mesh.fsdp*mesh.tensor = {fixed} must equal the device count '
        f'{num_devices}; set one of them to -1 to fill the rest')
  return tuple(sizes[a] for a in MESH_AXES)


def make_mesh(config: Any, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A (data, fsdp, tensor) mesh with Auto axes, so that GSPMD propagates shardings."""
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(config, len(devices))
  return jax.make_mesh(shape, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3,
                       devices=devices)


def abstract_mesh(config: Any, num_devices: int) -> jax.sharding.AbstractMesh:
  """The mesh's axis sizes without devices: enough to check a config for any slice."""
  return jax.sharding.AbstractMesh(
      mesh_shape(config, num_devices), MESH_AXES,
      axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES))


# ----------------------------------------------------------------------------------------
# Logical axes -> mesh axes
# ----------------------------------------------------------------------------------------


def logical_to_spec(
    axes: Sequence[str | None], rules: Rules, shape: Sequence[int] | None = None,
    mesh: Mesh | None = None,
) -> PartitionSpec:
  """Logical names -> PartitionSpec. Given shape and mesh, dims that don't divide stay whole."""
  table = dict(rules)
  used: set[str] = set()
  spec = []
  for i, name in enumerate(axes):
    target = table.get(name) if name is not None else None
    targets = () if target is None else (target,) if isinstance(target, str) else tuple(target)
    kept = []
    for mesh_axis in targets:
      if mesh_axis in used:
        continue
      if shape is not None and mesh is not None:
        size = math.prod(mesh.shape[a] for a in kept) * mesh.shape[mesh_axis]
        if shape[i] % size:
          continue
      kept.append(mesh_axis)
    used.update(kept)
    spec.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
  return PartitionSpec(*spec)


_ACTIVE: contextvars.ContextVar[tuple[Mesh, Rules] | None] = contextvars.ContextVar(
    'gato_axis_rules', default=None)


@contextlib.contextmanager
def axis_rules(mesh: Mesh, rules: Rules) -> Iterator[None]:
  """Activates `constrain` while tracing; outside it model code runs unconstrained.

  Also sets jax's mesh context, so jit caches traces made inside and outside it apart.
  """
  token = _ACTIVE.set((mesh, tuple(rules)))
  try:
    with jax.set_mesh(mesh):
      yield
  finally:
    _ACTIVE.reset(token)


def active() -> tuple[Mesh, Rules] | None:
  """The (mesh, rules) of the enclosing `axis_rules`, for code that must shard by hand."""
  return _ACTIVE.get()


def constrain(x: jax.Array, axes: Sequence[str | None]) -> jax.Array:
  """Pins an activation's layout by logical names; a no-op outside `axis_rules`."""
  active = _ACTIVE.get()
  if active is None:
    return x
  mesh, rules = active
  spec = logical_to_spec(axes, rules, x.shape, mesh)
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


# ----------------------------------------------------------------------------------------
# Parameters
# ----------------------------------------------------------------------------------------


def _logical_axes(variable: nnx.Variable) -> tuple[str | None, ...] | None:
  return variable.get_metadata().get('out_sharding') or None


def state_shardings(state: nnx.State, mesh: Mesh, rules: Rules) -> nnx.State:
  """NamedSharding for every leaf of an (abstract) state, from its logical axes."""
  def leaf(variable: nnx.Variable) -> nnx.Variable:
    value = variable.get_value()
    axes = _logical_axes(variable)
    spec = PartitionSpec() if axes is None else logical_to_spec(axes, rules, value.shape, mesh)
    return variable.replace(NamedSharding(mesh, spec))
  return jax.tree.map(leaf, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def unsplit_parameters(state: nnx.State, mesh: Mesh, rules: Rules) -> list[str]:
  """Parameters whose rules ask for a split that their shape does not allow."""
  out = []
  for path, variable in nnx.to_flat_state(state):
    axes = _logical_axes(variable)
    if axes is None:
      continue
    shape = variable.get_value().shape
    wanted = logical_to_spec(axes, rules)
    got = logical_to_spec(axes, rules, shape, mesh)
    if wanted != got:
      out.append(f'{"/".join(map(str, path))} {shape}: rules give {wanted}, kept {got}')
  return out


def check_fsdp(params: nnx.State, mesh: Mesh, config: Any) -> None:
  """Fails when FSDP was asked for but a large parameter is whole on every device.

  A rule that never uses `fsdp`, or a dimension that the fsdp axis does not divide, would
  silently cost each device the full parameter and its two Adam moments. Size is counted
  per layer: a stack of 24 small biases (scanned layers) is 24 small parameters, not one
  large one. Works on abstract parameters: only shapes and logical axes are read.
  """
  if mesh.shape['fsdp'] == 1:
    return
  replicated = []
  for path, variable in nnx.to_flat_state(params):
    shape = variable.get_value().shape
    axes = variable.get_metadata().get('out_sharding') or (None,) * len(shape)
    per_layer = math.prod(shape) // (shape[axes.index('layers')] if 'layers' in axes else 1)
    spec = logical_to_spec(axes, config.axis_rules, shape, mesh)
    used = [a for s in spec if s is not None for a in ((s,) if isinstance(s, str) else s)]
    if per_layer >= config.fsdp_min_param_size and math.prod(mesh.shape[a] for a in used) == 1:
      replicated.append(f'{"/".join(map(str, path))} {shape}')
  if replicated:
    why = unsplit_parameters(params, mesh, config.axis_rules)
    raise ValueError(
      f'config asks for mesh.fsdp={mesh.shape["fsdp"]} but {len(replicated)} parameters of '
      f'at least fsdp_min_param_size={config.fsdp_min_param_size} elements (per layer) are '
      f'replicated: {replicated[:5]}; check config.axis_rules. Splits the shapes do not '
      f'allow: {why[:5]}'
    )


# The config key behind each logical dimension that the `tensor` rule splits, for errors.
_TENSOR_DIM_KEYS = {
  'heads': 'model.num_heads',
  'mlp': 'model.mlp_dim',
  'vocab': 'the token table rows (tokenizer.*)',
}


def check_tensor(params: nnx.State, mesh: Any, config: Any) -> None:
  """Fails when the tensor axis cannot split a dimension the rules give it.

  `logical_to_spec` keeps a dimension whole when the mesh axis does not divide it, which
  for `fsdp` is checked by size (`check_fsdp`); for `tensor` it means every device holds,
  and computes, the whole of every head or hidden unit that the split was asked for: with
  mesh.tensor=8 and 4 heads, attention runs unsplit on all 8 devices. Any such dimension
  is an error naming mesh.tensor, the dimension and its config key. Works on abstract
  parameters (or an AbstractMesh): only shapes and logical axes are read.
  """
  size = mesh.shape['tensor']
  if size == 1:
    return
  bad: dict[tuple[str, int], list[str]] = {}
  for path, variable in nnx.to_flat_state(params):
    axes = _logical_axes(variable)
    if axes is None:
      continue
    shape = variable.get_value().shape
    wanted = logical_to_spec(axes, config.axis_rules)
    got = logical_to_spec(axes, config.axis_rules, shape, mesh)
    for name, dim, w, g in zip(axes, shape, wanted, got, strict=True):
      w_axes = () if w is None else (w,) if isinstance(w, str) else w
      g_axes = () if g is None else (g,) if isinstance(g, str) else g
      if 'tensor' in w_axes and 'tensor' not in g_axes:
        bad.setdefault((name, dim), []).append(f'{"/".join(map(str, path))} {shape}')
  if bad:
    dims = '; '.join(
      f'{name}={dim} ({_TENSOR_DIM_KEYS.get(name, "logical axis " + repr(name))}), e.g. '
      f'{", ".join(paths[:2])}' for (name, dim), paths in bad.items()
    )
    raise ValueError(
      f'config key mesh.tensor={size} does not divide the dimensions it splits: {dims}. '
      'Those weights would be whole on every device; use a mesh.tensor that divides them'
    )


def create_sharded(ctor: Callable[[], nnx.Module], mesh: Mesh, rules: Rules) -> nnx.Module:
  """Builds a module with every parameter born in its shards (never whole on one device).

  The constructor runs once abstractly to learn shapes and logical axes, then inside a
  jit whose out_shardings place each parameter, so a model larger than one device's
  memory initializes fine.
  """
  abstract = nnx.eval_shape(ctor)
  graphdef, abstract_state = nnx.split(abstract)
  shardings = state_shardings(abstract_state, mesh, rules)

  with axis_rules(mesh, rules):
    state = jax.jit(lambda: nnx.split(ctor())[1], out_shardings=shardings)()
  return nnx.merge(graphdef, state)


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh, rules: Rules) -> dict[str, jax.Array]:
  """Places a global batch with its leading axis on `batch` and the rest replicated."""
  def put(x: np.ndarray) -> jax.Array:
    axes = ('batch',) + (None,) * (np.ndim(x) - 1)
    return jax.device_put(x, NamedSharding(mesh, logical_to_spec(axes, rules, np.shape(x), mesh)))
  return {k: put(v) for k, v in batch.items()}
