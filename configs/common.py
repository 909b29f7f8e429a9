"""Pieces every experiment config shares, so that each default is written once."""

import ml_collections

# seqio's default 32,000-piece T5 SentencePiece model: the same size as Gato's text vocabulary.
T5_VOCABULARY = 'gs://t5-data/vocabs/cc_all.32000/sentencepiece.model'


def tokenizer_config(
  text_vocab_size: int = 32000, vocabulary: str = T5_VOCABULARY
) -> ml_collections.ConfigDict:
  """The token layout; every other offset is derived from text_vocab_size (tokenizer.py)."""
  return ml_collections.ConfigDict(
    {
      # Ids [0, text_vocab_size) are text; discrete, continuous and separator ids follow.
      'text_vocab_size': text_vocab_size,
      # 'byte' (seqio.ByteVocabulary, offline) or the path of a SentencePiece model.
      'vocabulary': vocabulary,
    }
  )


def mesh_config(data: int = -1, fsdp: int = 1, tensor: int = 1) -> ml_collections.ConfigDict:
  """Device mesh sizes; gato_jax/sharding.py builds the mesh and checks they fit."""
  return ml_collections.ConfigDict(
    {
      'data': data,  # Pure data parallelism: batch split, parameters replicated. -1 = the rest.
      'fsdp': fsdp,  # Batch split and parameters sharded over `embed` (ZeRO-3 style).
      'tensor': tensor,  # Megatron-style split of heads, MLP hidden units and vocabulary.
    }
  )


def logical_axis_rules() -> tuple[tuple[str, str | tuple[str, ...] | None], ...]:
  """The one table from the model's logical axis names to mesh axes (gato_jax/sharding.py).

  Earlier dimensions of an array claim a mesh axis first: activations [batch, length, embed]
  put `fsdp` on batch, while parameters [embed, mlp] put it on embed.
  """
  return (
    ('batch', ('data', 'fsdp')),  # Examples of a batch.
    ('length', None),  # Sequence positions.
    ('embed', 'fsdp'),  # d_model: parameters' FSDP axis.
    ('mlp', 'tensor'),  # Feed-forward hidden units.
    ('heads', 'tensor'),  # Attention heads.
    ('kv', None),  # Per-head key/value features.
    ('vocab', 'tensor'),  # Token table rows and logits.
    ('layers', None),  # The stacked layer axis that scan runs over.
    ('norm', None),  # LayerNorm scale and bias.
    ('channels', None),  # Patch ResNet channels.
    ('buckets', None),  # Patch row/column position buckets.
    ('local_positions', None),  # Local observation position table rows.
  )


def optimizer_config(
  learning_rate: float = 1e-4, warmup_steps: int = 15_000, decay_steps: int = 1_000_000
) -> ml_collections.ConfigDict:
  """AdamW with linear warmup and cosine decay (gato_jax/optimizer.py); paper values."""
  return ml_collections.ConfigDict(
    {
      'learning_rate': learning_rate,  # Peak learning rate, reached after the warmup.
      'final_learning_rate': learning_rate / 10,  # Cosine decay ends here (paper: 1e-5).
      'warmup_steps': warmup_steps,  # Linear warmup from 0.
      'decay_steps': decay_steps,  # Step at which the cosine reaches final_learning_rate.
      'b1': 0.9,  # Adam first-moment decay.
      'b2': 0.95,  # Adam second-moment decay.
      'eps': 1e-8,  # Adam denominator epsilon.
      'weight_decay': 0.1,  # Decoupled weight decay, on matrices only (not norms or biases).
      'grad_clip_norm': 1.0,  # Clip gradients to this global norm; 0 = no clipping.
      # Keep the optimizer state in host memory between steps, freeing 2/3 of the state's
      # device memory for the price of a host round trip per step (MaxText's option).
      'host_offload': False,
    }
  )


def train_config(
  total_steps: int, batch_size: int, checkpoint_every_steps: int, log_every_steps: int
) -> ml_collections.ConfigDict:
  """The trainer's top-level keys (gato_jax/train.py); merge with `config.update(...)`."""
  return ml_collections.ConfigDict(
    {
      'total_steps': total_steps,  # Optimizer updates in the whole run (resumes included).
      # Wall-clock budget of one trainer process: past it, save and stop before total_steps
      # (benchmarks/learning.py --minutes). The LR schedule is not shortened. 0 = none.
      'max_train_minutes': 0.0,
      'batch_size': batch_size,  # Global sequences per update, over all processes.
      'grad_accum_steps': 1,  # Micro-batches per update; batch_size must be a multiple.
      # 'tokens': the mean over all targets of the batch (Gato, T5X's default); 'sequences':
      # the mean of each sequence's mean, so one-action BabyAI windows weigh as much as text.
      'loss_normalization': 'tokens',
      'checkpoint_every_steps': checkpoint_every_steps,  # Also saved at the last step.
      'keep_checkpoints': 3,  # The newest K complete checkpoints are kept.
      'async_checkpointing': True,  # Write checkpoints in the background while training.
      'log_every_steps': log_every_steps,  # metrics.jsonl, TensorBoard and console line.
      # 'FIRST,LAST': a jax.profiler trace of those steps in WORKDIR/profile; '' = none.
      'profile_steps': '',
      # Fail at start-up if mesh.fsdp > 1 and a parameter this large is left replicated.
      'fsdp_min_param_size': 2**16,
      # Peak FLOP/s per device for MFU; 0 = look the device kind up (gato_jax/metrics.py).
      'peak_flops': 0.0,
      'optimizer': optimizer_config(),  # AdamW, warmup and cosine decay, clipping.
    }
  )


def data_config(mixture: str, data_dir: str = 'data', **overrides) -> ml_collections.ConfigDict:
  """`config.data`: the seqio mixture and how its sequences are made (gato_jax/data/)."""
  data = ml_collections.ConfigDict(
    {
      'source': 'mixture',  # 'mixture' (seqio, gato_jax/data/tasks.py) or 'synthetic'.
      'mixture': mixture,  # A registered seqio mixture or task name.
      'data_dir': data_dir,  # TFDS directory of the generated datasets (and public ones).
      'episodes_per_task': 20,  # Episodes per task data_pipelines.prepare generates.
      'task_episodes': '',  # Per-task exceptions to it: 'babyai_gotoredball=300,cartpole=40'.
      'random_episodes': 20,  # Random-policy episodes measuring the random return (0%).
      'max_episode_steps': 0,  # Cap on generated episode length; 0 keeps the env's limit.
      'caption_examples': 2000,  # Drawn-shape captions generated when needed.
      'min_return_fraction': 0.8,  # Keep episodes this far from random to expert return.
      'prompt_probability': 0.25,  # Share of sequences that start with a prompt.
      'prompt_end_probability': 0.5,  # Share of prompts taken from an episode's end.
      'prompt_length': 0,  # Tokens a prompt may take; 0 = a quarter of model.max_length.
      'bad_examples': 'raise',  # 'raise' or 'drop' (counted and logged) on a bad episode.
      'episode_shuffle_buffer': 16,  # Episodes shuffled before windowing.
      'caption_pairs': 5,  # (image, caption) pairs per captioning sequence (paper: 5).
      'caption_image_size': 64,  # Caption images are resized to this square (x16).
      'caption_max_tokens': 32,  # Caption text tokens kept per pair.
      'text_files': '',  # Comma-separated local text files for gato_text_local.
      # A run's own registrations (gato_jax/data/tasks.py register_from_config), all config:
      'modules': '',  # Comma-separated modules to import (seqio tasks, specs.register).
      'specs': {},  # Task name -> TaskSpec as config (gato_jax/specs/config.py).
      'public_sources': {},  # Name -> public RLDS source (gato_jax/data/public_rlds.py).
      'mixtures': {},  # Name -> {task: rate}.
      'public_data_dir': '',  # Reads every public dataset from here; '' = each its own.
      # Pack several short sequences into each row, numbered by segment ids (attention and
      # positions stay per sequence); off = one sequence per row, padded to L.
      'pack': False,
    }
  )
  data.update(overrides)
  return data


def eval_config(tasks: str = '', **overrides) -> ml_collections.ConfigDict:
  """`config.eval`: what the evaluator (gato_jax/evaluator.py) rolls out and how it samples."""
  evaluation = ml_collections.ConfigDict(
    {
      'tasks': tasks,  # Comma-separated task names; '' = the env tasks of data.mixture.
      'episodes': 50,  # Completed episodes per task (Gato's figure 5 uses 50).
      'batch_size': 50,  # Environments stepped together per task (one model call per step).
      'max_steps': -1,  # Episode length cap; -1 = data.max_episode_steps, 0 = the env's limit.
      'seed': 2_000_000,  # First env seed; far from the dataset's seeds, so levels are unseen.
      'temperature': 1.0,  # Action-token sampling temperature; 0 = greedy.
      'prompt_mode': 'end',  # Demonstration prompt: 'end', 'uniform' or 'none'.
      'prompt_tokens': 0,  # Most prompt positions; 0 = as in training (data.prompt_length).
      'prompt_episodes': 50,  # Dataset episodes read as prompt candidates.
      'slide_to': -1,  # Positions kept when the context passes L; -1 = L // 2 (or less).
      'use_cache': True,  # KV-cached sampling; False re-runs the whole context per token.
      # Held-out expert episodes per env task (seeds eval.seed + 1_000_000, ...) scored
      # teacher-forced: action-token accuracy and loss, action error (action_metrics.py).
      'offline_episodes': 3,  # 0 = no offline metrics.
      # Dataset-only tasks scored the same way: comma-separated public RLDS sources (the
      # catalog's or data.public_sources), their first offline_episodes episodes of
      # offline_split. Training reads all of 'train': name a split it does not read
      # (e.g. 'test') where the dataset has one, for held-out episodes.
      'offline_tasks': '',
      'offline_split': 'train',
      'max_failures': -1,  # Env failures tolerated per task before it errors; -1 = episodes.
      'poll_seconds': 30.0,  # How often the watcher looks for new checkpoints.
      'wait_seconds': 3600.0,  # How long --step waits for a checkpoint still being written.
      # A checkpoint being written counts as alive while a file of its tmp directory changed
      # within this many seconds; older, it is a dead trainer's leftover and is not waited on.
      'writer_alive_seconds': 600.0,
    }
  )
  evaluation.update(overrides)
  return evaluation
