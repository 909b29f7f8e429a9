"""Teacher-forced action metrics: how well a checkpoint predicts an expert's logged actions.

Playing episodes (gato_jax/policy.py) measures what a checkpoint does; these figures measure
what it predicts, without an environment, so that they exist for dataset-only tasks (Open
X-Embodiment) too and move smoothly with training where a return jumps. Each held-out
episode is tokenized by the task's TaskTokenizer, the training tokenizer, and cut into
consecutive windows of whole timesteps that fit the model's L positions (no prompts;
every timestep in exactly one window, as a training window starts on a timestep boundary).
One jitted forward pass per batch of windows, the model's deterministic training forward,
gives at every action token the logits that predict it from the true tokens before it:

  action_token_accuracy  share of action tokens whose greedy choice (the argmax over the
                         action kind's token range, what greedy acting samples) is the
                         logged token
  action_token_loss      mean cross-entropy in nats of the logged action tokens over the
                         whole vocabulary: the training loss restricted to action tokens
  action_error           continuous actions: mean absolute difference, in the environment's
                         units, between each step's logged action and the one its greedy
                         tokens de-tokenize to (TaskTokenizer.detokenize_action, the path an
                         env receives); None for discrete actions
  action_accuracy        discrete actions: share of steps whose every action token is right;
                         None for continuous actions

A perfect predictor scores accuracy 1, loss 0 and an action error of at most half a bin:
the tokenizer's own quantization (tests/test_action_metrics.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gato_jax import replay, specs
from gato_jax import tokenizer as tok
from gato_jax.envs import runner
from gato_jax.envs.wrappers import model_inputs, sampling_range
from gato_jax.model import inputs

Episode = replay.Episode  # The T acted steps' observations, actions.

BATCH_WINDOWS = 8  # Windows per forward pass: one shape, one compile; logits stay small.


def windows(
  task_tokenizer: specs.TaskTokenizer, episodes: Sequence[Episode], length: int
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
  """Every episode's timesteps as right-padded windows [W, L] of whole timesteps.

  Returns the windows' model inputs, and for each window and position the index of the
  (episode-major) step whose action token sits there, -1 elsewhere, and the logged actions
  of all steps [S, *action shape] in the same order.
  """
  spec = task_tokenizer.spec
  per_step = spec.tokens_per_timestep
  steps_per_window = length // per_step
  if steps_per_window == 0:
    raise ValueError(
      f'task {spec.name!r}: a timestep is {per_step} tokens, more than the context '
      f'(config key model.max_length = {length})'
    )
  is_action = np.zeros(per_step, bool)
  is_action[spec.observation_tokens + 1 :] = True
  rows, step_of, actions, first = [], [], [], 0
  for observations, logged in episodes:
    tokenized = task_tokenizer.tokenize_steps(observations, logged)
    _, checked = spec.check_steps(observations, logged)
    actions.append(checked)
    count = len(checked)
    for start in range(0, count, steps_per_window):
      stop = min(start + steps_per_window, count)
      window = {k: v[start:stop] for k, v in vars(tokenized).items()}
      rows.append(inputs.pad(model_inputs(tok.TokenizedSteps(**window)), length, left=False))
      index = np.where(is_action, first + np.arange(start, stop)[:, None], -1).reshape(-1)
      step_of.append(np.pad(index, (0, length - len(index)), constant_values=-1))
    first += count
  if not rows:
    raise ValueError(f'task {spec.name!r}: no episode with an acted step to score')
  return inputs.stack(rows), np.stack(step_of), np.concatenate(actions)


@nnx.jit
def _predict(
  model: nnx.Module, batch: dict[str, jax.Array], start: jax.Array, stop: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """Per position p >= 1 of [B, L]: -log p(tokens[p]) and the greedy id in [start, stop),
  both from the logits at p - 1; position 0 (never an action) gets zeros."""
  logits = model(batch)[:, :-1].astype(jnp.float32)
  targets = batch['tokens'][:, 1:]
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
  ids = jnp.arange(logits.shape[-1])
  allowed = (ids >= start) & (ids < stop)
  greedy = jnp.argmax(jnp.where(allowed, logits, -jnp.inf), axis=-1).astype(jnp.int32)
  pad = ((0, 0), (1, 0))
  return jnp.pad(nll, pad), jnp.pad(greedy, pad)


def greedy_actions(
  model: nnx.Module,
  task_tokenizer: specs.TaskTokenizer,
  episodes: Sequence[Episode],
  length: int,
  batch_windows: int = BATCH_WINDOWS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Teacher-forced greedy action tokens of every acted step of `episodes`.

  Returns, in episode-major step order, the greedy tokens [S, action_tokens], the logged
  tokens [S, action_tokens], their losses in nats [S, action_tokens] and the logged actions
  [S, *action shape]. gato_jax/replay.py holds the deployment loop to the same tokens.
  """
  spec = task_tokenizer.spec
  batch, step_of, logged = windows(task_tokenizer, episodes, length)
  start, stop = sampling_range(task_tokenizer)
  count = len(step_of)
  padded = -count % batch_windows  # Empty windows fill the last batch: one compiled shape.
  batch = {
    k: np.concatenate([v, np.zeros((padded, *v.shape[1:]), v.dtype)]) for k, v in batch.items()
  }
  nll, greedy = [], []
  for i in range(0, count + padded, batch_windows):
    chunk = {k: v[i : i + batch_windows] for k, v in batch.items()}
    out = _predict(model, chunk, np.int32(start), np.int32(stop))
    nll.append(np.asarray(out[0]))
    greedy.append(np.asarray(out[1]))
  nll, greedy = np.concatenate(nll)[:count], np.concatenate(greedy)[:count]
  where = step_of >= 0
  # Window positions are step-major, tokens in order, so the flat order is (step, token).
  shape = (len(logged), spec.action_tokens)
  targets = batch['tokens'][:count][where].reshape(shape)
  return greedy[where].reshape(shape), targets, nll[where].reshape(shape), logged


def evaluate_episodes(
  model: nnx.Module,
  task_tokenizer: specs.TaskTokenizer,
  episodes: Sequence[Episode],
  length: int,
  batch_windows: int = BATCH_WINDOWS,
) -> dict[str, Any]:
  """The module docstring's figures over `episodes` ((observations, actions) acted steps)."""
  return figures(task_tokenizer, *greedy_actions(model, task_tokenizer, episodes, length,
                                                 batch_windows), episodes=len(episodes))


def figures(
  task_tokenizer: specs.TaskTokenizer,
  predicted: np.ndarray,
  targets: np.ndarray,
  nll: np.ndarray,
  logged: np.ndarray,
  episodes: int,
) -> dict[str, Any]:
  """`evaluate_episodes`' figures from `greedy_actions`' output, for a caller that also
  needs the tokens themselves (gato_jax/diagnose.py) and so runs the forward once."""
  out = replay.compare(task_tokenizer, predicted, targets, logged)
  out['action_token_loss'] = float(nll.mean())
  out['episodes'] = episodes
  return {k: out[k] for k in _FIGURES}


# eval/<step>.json's order of the figures.
_FIGURES = (
  'action_token_accuracy', 'action_token_loss', 'action_error', 'action_accuracy', 'episodes',
  'steps', 'action_tokens',
)


# ----------------------------------------------------------------------------------------
# Held-out expert episodes of an environment task
# ----------------------------------------------------------------------------------------


class ExpertRecorder(runner.EnvPolicy):
  """The task's expert through the evaluator's own loop (`--policy=expert`), keeping each
  row's raw observations and the actions the expert chose, before tokenization."""

  def __init__(self, task_tokenizer: specs.TaskTokenizer):
    super().__init__(task_tokenizer, 'expert')
    self.recorded: dict[int, tuple[list[dict[str, Any]], list[Any]]] = {}
    self.rows: list[tuple[list[dict[str, Any]], list[Any]]] = []

  def begin(self, envs_: Sequence[Any], seeds: Sequence[int]) -> None:
    super().begin(envs_, seeds)
    self.rows = [self.recorded.setdefault(s, ([], [])) for s in seeds]

  def act(self, observations: Sequence[Any]) -> np.ndarray:
    tokens = np.zeros((len(observations), self.task_tokenizer.spec.action_tokens), np.int32)
    for i, o in enumerate(observations):
      if o is not None:
        action = self.policies[i](o.raw)
        self.rows[i][0].append(tok.flatten_observation(o.raw))
        self.rows[i][1].append(np.asarray(action))
        tokens[i] = self.envs[i].encode_action(o.raw, action)
    return tokens


def expert_episodes(
  task: str,
  task_tokenizer: specs.TaskTokenizer,
  count: int,
  seed: int,
  max_steps: int | None,
  batch_size: int = 8,
) -> list[Episode]:
  """`count` completed expert episodes of seeds seed, seed + 1, ... as acted steps.

  Run by gato_jax/envs/runner.py as the reference policies are: an env that fails has its
  episode replaced, and a partial recording of a failed one is never scored.
  """
  recorder = ExpertRecorder(task_tokenizer)
  results = runner.run_episodes(
    task,
    task_tokenizer,
    recorder,
    episodes=count,
    batch_size=min(batch_size, count),
    seed=seed,
    max_steps=max_steps,
  )
  out = []
  for r in results:
    observations, actions = recorder.recorded[r.seed]
    if r.failed or not actions:
      continue
    fields = {k: np.stack([o[k] for o in observations]) for k in observations[0]}
    out.append((fields, np.stack(actions)))
  return out
