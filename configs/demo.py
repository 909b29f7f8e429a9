"""The CPU demo: tiny data from real environments, tokenized the way Gato trains on it.

  python -m data_pipelines.inspect_tokens --config=configs/demo.py
  python -m data_pipelines.inspect_tokens --config=configs/demo.py --config.tasks=cartpole,pendulum
  python -m gato_jax.model.summary --config=configs/demo.py

This config grows with the project: model, mixture and training sections join it as the
trainer and the evaluator land.
"""

import ml_collections

from configs import common, models


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  # Byte-level text keeps the demo offline; 512 leaves room for a locally trained model.
  config.tokenizer = common.tokenizer_config(text_vocab_size=512, vocabulary='byte')
  config.tasks = 'cartpole,babyai_gotoredball'  # Comma-separated names from gato_jax/envs/specs.py.
  config.episodes = 2  # Episodes rolled out per task by the token inspector.
  config.seed = 0  # Seeds the environments, so the demo prints the same tokens every run.
  config.model = models.model_config('demo')  # About 1M parameters (configs/models.py).
  config.mesh = common.mesh_config()  # All devices on 'data'; --config.mesh.fsdp=2 etc.
  config.axis_rules = common.logical_axis_rules()  # Logical axis -> mesh axis.
  return config
