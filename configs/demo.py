"""The CPU demo: tiny data from real environments, tokenized the way Gato trains on it.

  python -m data_pipelines.inspect_tokens --config=configs/demo.py
  python -m data_pipelines.inspect_tokens --config=configs/demo.py --config.tasks=cartpole,pendulum
  python -m gato_jax.model.summary --config=configs/demo.py
  python -m data_pipelines.prepare --config=configs/demo.py
  python -m gato_jax.train --config=configs/demo.py --workdir=/tmp/gato_demo
  python -m gato_jax.evaluator --config=configs/demo.py --workdir=/tmp/gato_demo

This config grows with the project: model, mixture and training sections join it as the
trainer and the evaluator land.
"""

import ml_collections

from configs import common, models


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  # Byte-level text keeps the demo offline; 512 leaves room for a locally trained model.
  config.tokenizer = common.tokenizer_config(text_vocab_size=512, vocabulary='byte')
  config.tasks = 'cartpole,babyai_gotoredball'  # Comma-separated task names (gato_jax/specs/).
  config.episodes = 2  # Episodes rolled out per task by the token inspector.
  config.seed = 0  # Seeds the environments, so the demo prints the same tokens every run.
  config.model = models.model_config('demo')  # About 1M parameters (configs/models.py).
  config.model.local_positions = 256  # BabyAI's 7x7x3 grid and mission: 196 observation tokens.
  # model.position_encoding is 'rope', the default of every size: without positions the
  # state tasks fall back on copying the previous action (docs/model.md).
  config.mesh = common.mesh_config()  # All devices on 'data'; --config.mesh.fsdp=2 etc.
  config.axis_rules = common.logical_axis_rules()  # Logical axis -> mesh axis.
  # Data (gato_jax/data/tasks.py): written by python -m data_pipelines.prepare (make demo).
  config.data = common.data_config(
      'gato_demo', data_dir='data/demo', episodes_per_task=20,
      max_episode_steps=300, caption_examples=500,
      # Short episodes are cheap: more of them, so the model sees many starting states.
      task_episodes='babyai_gotoredball=500,acrobot=200,mountaincar=200,cartpole=100,metaworld_reach=200')
  # Training (gato_jax/train.py): about 7 minutes on 2 CPU cores.
  config.update(common.train_config(
      total_steps=1000, batch_size=8, checkpoint_every_steps=200, log_every_steps=10))
  config.optimizer.learning_rate = 2e-3  # A tiny model takes a larger step than the paper's.
  config.optimizer.final_learning_rate = 2e-4
  config.optimizer.warmup_steps = 100
  config.optimizer.decay_steps = 1000
  # Evaluation (gato_jax/evaluator.py): the demo mixture's env tasks, 20 episodes each.
  config.eval = common.eval_config(episodes=20, batch_size=20)
  return config
