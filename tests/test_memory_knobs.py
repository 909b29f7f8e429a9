"""The memory knobs of docs/performance.md: each one changes what a step keeps, never its result.

Every knob runs here on the 8-device CPU mesh through the trainer's own step, and must give
the update the plain step gives. The splash kernel cannot run on a CPU: its numbers are
checked in Pallas's interpreter, and its lowering and memory by compiling for a TPU topology
with libtpu's compile-only devices.
"""

from __future__ import annotations

import importlib.util
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tiny_train_config
from flax import nnx

from configs import demo
from gato_jax import aot, optimizer, sharding, tokenizer, topology, train
from gato_jax.model import ModelOptions, splash
from gato_jax.model.batch import synthetic_batch

HAS_LIBTPU = importlib.util.find_spec('libtpu') is not None


def _one_step(**overrides):
  """(parameters, optimizer state, metrics) after two updates of the tiny run on one batch.

  Adam's epsilon is 1, so that an update is about the learning rate times the gradient:
  float rounding then moves parameters by rounding's size, not by a whole step (with a
  small epsilon a near-zero gradient's sign alone sets its parameter's update).
  """
  config = tiny_train_config.with_overrides(**{
    'model.dropout_rate': 0.0, 'optimizer.eps': 1.0, 'optimizer.learning_rate': 1.0,
    **overrides})
  mesh = sharding.make_mesh(config)
  tx = optimizer.make_optimizer(config)
  batch = synthetic_batch(8, 32, 700, seed=3)
  image = (batch['kinds'] == tokenizer.TokenKind.IMAGE)[..., None]
  batch['patch_positions'] = np.where(image, [3, 4, 5, 6], 0).astype(np.int32)
  batch['loss_mask'] = np.ones((8, 32), np.int32)
  layout = train.abstract_train_state(config, mesh, tx)
  state = train.init_train_state(config, mesh, tx, layout)
  step = train.jit_train_step(config, mesh, layout, tx, batch)
  with sharding.axis_rules(mesh, config.axis_rules):
    placed = sharding.shard_batch(batch, mesh, config.axis_rules)
    state, metrics = step(state, placed, 0)
    # A second step takes the first one's outputs, wherever they were placed.
    state, metrics = step(state, placed, 1)
  return jax.device_get(nnx.to_pure_dict(state.params)), state.opt_state, jax.device_get(metrics)


@pytest.fixture(scope='module')
def plain():
  return _one_step()


@pytest.mark.parametrize(
  'overrides',
  [
    {'model.loss_chunks': 4},
    {'model.remat_patches': True},
    {'model.remat': 'names', 'model.remat_save': 'query,key,value,mlp_hidden'},
    {'model.remat': 'names', 'model.remat_save': 'query',
     'model.remat_offload': 'context,mlp_hidden'},
    {'optimizer.host_offload': True},
  ],
  ids=['loss_chunks', 'remat_patches', 'remat_save', 'remat_offload', 'optimizer_offload'],
)
def test_a_memory_knob_gives_the_same_update(plain, overrides):
  params, _, metrics = plain
  knob_params, knob_opt_state, knob_metrics = _one_step(**overrides)
  if overrides.get('optimizer.host_offload'):
    # Between steps the optimizer state lives in host memory, not on the device.
    kinds = {x.sharding.memory_kind for x in jax.tree.leaves(knob_opt_state)}
    assert kinds == {'pinned_host'}
  np.testing.assert_allclose(knob_metrics['loss'], metrics['loss'], rtol=1e-6)
  np.testing.assert_allclose(knob_metrics['grad_norm'], metrics['grad_norm'], rtol=1e-5)
  for kind in ('text', 'action_discrete'):
    assert knob_metrics[f'count/{kind}'] == metrics[f'count/{kind}']
    np.testing.assert_allclose(knob_metrics[f'accuracy/{kind}'], metrics[f'accuracy/{kind}'])
  for a, b in zip(jax.tree.leaves(knob_params), jax.tree.leaves(params), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize(
  'key, value, message',
  [
    ('loss_chunks', 3, 'model.loss_chunks must be a positive int dividing'),
    ('loss_chunks', 0, 'model.loss_chunks'),
    ('remat_save', 'query,keys', r"unknown tensors \['keys'\]"),
    ('remat_offload', 'context', "needs model.remat='names'"),
    ('attention', 'flash', 'model.attention must be one of'),
  ],
)
def test_bad_knobs_name_their_config_key(key, value, message):
  config = demo.get_config().model
  config[key] = value
  with pytest.raises(ValueError, match=message):
    ModelOptions.from_model_config(config)


def test_a_tensor_both_saved_and_offloaded_is_refused():
  config = demo.get_config().model
  config.remat, config.remat_save, config.remat_offload = 'names', 'query,context', 'context'
  with pytest.raises(ValueError, match=r"both name \['context'\]"):
    ModelOptions.from_model_config(config)


def test_splash_needs_a_length_its_blocks_tile():
  config = demo.get_config().model
  config.attention, config.max_length = 'splash', 200
  with pytest.raises(ValueError, match='model.max_length to be a multiple of 512'):
    ModelOptions.from_model_config(config)


def test_splash_kernel_matches_xla_attention_and_its_gradient():
  """The kernel itself, in Pallas's interpreter: same outputs and same input gradients."""
  q, k, v = (jax.random.normal(jax.random.key(i), (2, 256, 2, 64)) for i in range(3))
  cotangent = jax.random.normal(jax.random.key(3), q.shape)

  def xla(q, k, v):
    return jax.nn.dot_product_attention(q, k, v, is_causal=True)

  def kernel(q, k, v):
    return splash.splash_attention(q, k, v, interpret=True)

  np.testing.assert_allclose(kernel(q, k, v), xla(q, k, v), atol=2e-5)
  grads = [jax.vjp(f, q, k, v)[1](cotangent) for f in (kernel, xla)]
  for a, b in zip(*grads, strict=True):
    np.testing.assert_allclose(a, b, atol=2e-4)


def test_splash_on_a_cpu_mesh_is_refused_naming_the_key():
  config = demo.get_config()
  config.model.attention = 'splash'
  mesh = sharding.make_mesh(config)
  q = jnp.zeros((8, 256, 4, 32))
  with sharding.axis_rules(mesh, config.axis_rules):
    with pytest.raises(ValueError, match="model.attention='splash' is a TPU kernel"):
      jax.jit(splash.splash_attention).lower(q, q, q)


@pytest.mark.skipif(not HAS_LIBTPU, reason="libtpu is not installed (pip install -e '.[aot]')")
def test_splash_lowers_to_the_tpu_kernel_and_the_step_needs_less_memory():
  """The demo model at L=512 on a v5e-4: the kernel is in the step, and its peak drops."""
  reports = {}
  for attention in ('xla', 'splash'):
    config = demo.get_config()
    config.mesh.data, config.mesh.fsdp = 1, 4
    config.model.max_length, config.batch_size = 512, 8
    config.model.attention = attention
    lowered, report = aot.lower_train(config, topology.parse_topology('v5e-4'))
    text = lowered.as_text()
    assert ('tpu_custom_call' in text) == (attention == 'splash')
    aot._compile(lowered, report)
    assert report.fits
    reports[attention] = report
  # XLA keeps [B, H, L, L] attention weights of every layer for the backward pass.
  saved = reports['xla'].peak_bytes - reports['splash'].peak_bytes
  m = config.model
  scores = 8 // 4 * m.num_heads * 512 * 512 * 4  # One layer's float32 scores, per chip.
  assert saved > scores


@pytest.mark.skipif(not HAS_LIBTPU, reason="libtpu is not installed (pip install -e '.[aot]')")
def test_saving_context_keeps_the_backward_pass_from_rerunning_splash():
  """Full remat runs the forward kernel again in the backward pass; saving 'context' not."""
  forward_calls = {}
  for remat, save in (('full', ''), ('names', 'context')):
    config = demo.get_config()
    config.mesh.data, config.mesh.fsdp = 1, 4
    config.model.attention, config.model.remat, config.model.remat_save = 'splash', remat, save
    lowered, _ = aot.lower_train(config, topology.parse_topology('v5e-4'))
    names = re.findall(r'kernel_name = "([^"]+)"', lowered.as_text())
    forward_calls[remat] = sum(n.startswith('splash_mha_fwd') for n in names)
    assert any(n.startswith('splash_mha_dkv') for n in names)  # The backward kernels.
  assert forward_calls == {'full': 2, 'names': 1}
