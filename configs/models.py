"""Model sizes: the paper's three (appendix C.1) and a tiny one for the CPU demo and tests.

Every option of `config.model` is defined, with its comment, in `model_config` below;
gato_jax/model/options.py (ModelOptions) validates them at start-up.
"""

import ml_collections

from configs import common, slices

# name: (layers, d_model, heads, FF hidden, key/value size), Reed et al. 2022, table in C.1.
SIZES = {
    '79m': (8, 768, 24, 3072, 32),
    '364m': (12, 1536, 12, 6144, 128),
    '1b2': (24, 2048, 16, 8192, 128),
    'demo': (2, 128, 4, 512, 32),  # About 1M parameters: trains on a 2-core CPU.
}


def model_config(size: str) -> ml_collections.ConfigDict:
  """`config.model` for one of SIZES."""
  if size not in SIZES:
    raise ValueError(f'model size must be one of {sorted(SIZES)}, got {size!r}')
  layers, d_model, heads, mlp_dim, head_dim = SIZES[size]
  paper = size != 'demo'
  return ml_collections.ConfigDict({
      'num_layers': layers,  # Transformer blocks.
      'd_model': d_model,  # Width of the residual stream and of every embedding.
      'num_heads': heads,  # Attention heads.
      'head_dim': head_dim,  # Key/value size per head (the paper's "key/value size").
      'mlp_dim': mlp_dim,  # Hidden width of each block's feed-forward layer.
      'max_length': 1024 if paper else 256,  # Context length L; also the KV cache's default.
      'dropout_rate': 0.1 if paper else 0.0,  # Embedding and residual dropout while training.
      'local_positions': 512 if paper else 128,  # Rows of the local observation position table.
      'resnet_channels': 32 if paper else 8,  # Channels of the per-patch ResNet block.
      'resnet_groups': 8 if paper else 4,  # GroupNorm groups in that block.
      'vocab_multiple': 128,  # Token table rows round up to this; the extra logits are masked.
      'dtype': 'bfloat16' if paper else 'float32',  # Compute dtype: 'bfloat16' or 'float32'.
      'param_dtype': 'float32',  # Storage dtype of the parameters.
      # What each layer keeps for the backward pass: 'none' (everything), 'minimal' (matmul
      # outputs), 'full' (only its input) or 'names' (the two lists below).
      'remat': 'minimal' if paper else 'none',
      # With remat='names': comma-separated tensors kept on the device, and tensors moved to
      # host memory until the backward pass; of query, key, value, context, attention_out,
      # mlp_hidden, mlp_out. The rest are recomputed.
      'remat_save': '',
      'remat_offload': '',
      'remat_patches': paper,  # Recompute the patch ResNet in the backward pass.
      # The output layer and cross-entropy run over this many slices of the sequence, one
      # at a time, so that [B, L, vocab] float32 logits never exist whole.
      'loss_chunks': 8 if paper else 1,
      'scan_layers': True,  # Scan the stack (fast compiles) or unroll it; same parameters.
      # 'xla' or 'cudnn' (jax.nn.dot_product_attention) or 'splash' (the Pallas TPU kernel,
      # gato_jax/model/splash.py; TPU only).
      'attention': 'xla',
      # Continuous-value rows of the token table: 'normal' (the paper) or 'ordinal' (smooth
      # in the value, so near bins start similar; see gato_jax/model/embedding.py).
      'value_embedding_init': 'normal',
      # 'rope': rotary position embeddings on queries and keys, so attention can find the
      # current timestep (relative, as in the Gopher-family decoders; needs an even
      # head_dim), or 'none': the paper as written, only its local and patch positions.
      'position_encoding': 'rope',
      # How image pixels enter the patch ResNet: 'paper' ([-1, 1] / 4, black is -0.25) or
      # 'unit' ([0, 1], black is 0). With 'paper' the demo model never reads Breakout's
      # frames: the black offset every patch shares drowns the ball (docs/performance.md).
      'pixel_normalization': 'paper' if paper else 'unit',
  })


def paper_config(size: str, slice_preset: str | None = None) -> ml_collections.ConfigDict:
  """A whole experiment config for one of the paper's sizes; configs/gato_*.py return it.

  `slice_preset` names a TPU slice of configs/slices.py, whose mesh, accumulation and remat
  were compiled and shown to fit there (gato_jax.aot).
  """
  config = ml_collections.ConfigDict()
  config.tokenizer = common.tokenizer_config()  # T5's 32,000 SentencePiece pieces.
  config.model = model_config(size)  # Layers, widths and options: model_config above.
  config.mesh = common.mesh_config()  # All devices on 'data' unless overridden.
  config.axis_rules = common.logical_axis_rules()  # Logical axis -> mesh axis.
  config.seed = 0  # Parameter initialization, dropout and the data order.
  # Paper scale (§4): batch 512 for 1M steps; checkpoints every 5,000 steps.
  config.update(common.train_config(
      total_steps=1_000_000, batch_size=512, checkpoint_every_steps=5_000, log_every_steps=100))
  # Table 1's domain weights over the tasks here, plus C4 and COCO (prepared in data_dir).
  config.data = common.data_config('gato_table1', data_dir='gs://YOUR_BUCKET/tensorflow_datasets')
  config.eval = common.eval_config()  # 50 episodes per env task of the mixture (figure 5).
  if slice_preset:
    slices.apply(config, slice_preset)  # Mesh, grad_accum_steps, model.remat, topology.
  return config
