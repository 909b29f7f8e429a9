"""Logged expert episodes through the deployment loop: where training and acting part ways.

A checkpoint can predict an expert's actions well teacher-forced (gato_jax/action_metrics.py)
and still act badly in the environment. Between the two sit the deployment loop's own
choices (gato_jax/policy.py): the demonstration prompt, the KV cache and the context that
slides, the sampling temperature, and, in closed loop, the model's own earlier actions in
its context. Replaying a logged episode's observations through `GatoPolicy` turns those on
one at a time, on the same observations, so the step where the figures drop names the cause:

  forced      the context records the expert's actions (as the training windows do): with
              no prompt and greedy sampling this must agree with the teacher-forced figures
              up to the context the two see (tests/test_replay.py holds them equal)
  own         the context records the loop's own sampled actions, on the expert's
              observations: what drifting into one's own action history costs

Each replay reports the same figures as the teacher-forced metrics (`compare`), over every
acted step of the episodes. `python -m gato_jax.replay` prints them next to the closed-loop
return for a checkpoint (docs/evaluation.md, "Why a task scores low").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from gato_jax import specs
from gato_jax import tokenizer as tok
from gato_jax.envs.wrappers import observation_inputs
from gato_jax.policy import GatoPolicy

Episode = tuple[dict[str, np.ndarray], np.ndarray]  # The T acted steps' observations, actions.


def logged_action_tokens(task_tokenizer: specs.TaskTokenizer, episode: Episode) -> np.ndarray:
  """The action tokens [T, action_tokens] the training tokenizer gives an episode's actions."""
  observations, actions = episode
  steps = task_tokenizer.tokenize_steps(observations, actions)
  return steps.tokens[:, task_tokenizer.spec.observation_tokens + 1 :]


def compare(
  task_tokenizer: specs.TaskTokenizer,
  predicted: np.ndarray,
  logged_tokens: np.ndarray,
  logged_actions: np.ndarray,
) -> dict[str, Any]:
  """Predicted against logged action tokens [S, action_tokens], with the logged actions.

  action_token_accuracy  share of action tokens equal to the logged token
  action_error           continuous actions: mean absolute difference, in the env's units,
                         between the logged action and the predicted tokens de-tokenized
                         (the action the env would receive); None for discrete actions
  action_accuracy        discrete actions: share of steps with every token right
  """
  spec = task_tokenizer.spec
  if predicted.shape != logged_tokens.shape:
    raise ValueError(
      f'task {spec.name!r}: predicted action tokens {predicted.shape} against logged '
      f'{logged_tokens.shape}'
    )
  right = predicted == logged_tokens
  out: dict[str, Any] = {
    'action_token_accuracy': float(right.mean()),
    'action_error': None,
    'action_accuracy': None,
    'steps': len(predicted),
    'action_tokens': int(right.size),
  }
  if isinstance(spec.action, tok.DiscreteField):
    out['action_accuracy'] = float(right.all(axis=1).mean())
  else:
    decoded = np.stack([task_tokenizer.detokenize_action(t) for t in predicted])
    out['action_error'] = float(np.abs(decoded - np.asarray(logged_actions)).mean())
  return out


def replay_actions(
  policy: GatoPolicy,
  episodes: Sequence[Episode],
  seeds: Sequence[int],
  forced: bool,
) -> list[np.ndarray]:
  """Every episode's observations through `policy`, all episodes as one round of rows.

  Row i's prompt is the one the closed-loop episode of `seeds[i]` gets. With `forced` the
  contexts record the logged actions, else the sampled ones. Returns each episode's
  sampled action tokens [T, action_tokens].
  """
  task_tokenizer = policy.task_tokenizer
  if len(seeds) != len(episodes):
    raise ValueError(f'{len(episodes)} episodes but {len(seeds)} seeds')
  logged = [logged_action_tokens(task_tokenizer, e) for e in episodes]
  predicted = [np.zeros_like(t) for t in logged]
  policy.begin([None] * len(episodes), list(seeds))
  for step in range(max(len(t) for t in logged)):
    live = [step < len(t) for t in logged]
    observations = [
      observation_inputs(task_tokenizer, {k: v[step] for k, v in e[0].items()}) if alive else None
      for e, alive in zip(episodes, live, strict=True)
    ]
    force = np.stack([t[min(step, len(t) - 1)] for t in logged]) if forced else None
    tokens = policy.act(observations, forced=force)
    for i, alive in enumerate(live):
      if alive:
        predicted[i][step] = tokens[i]
  return predicted


def replay(
  policy: GatoPolicy,
  episodes: Sequence[Episode],
  seeds: Sequence[int],
  forced: bool,
) -> dict[str, Any]:
  """`compare`'s figures for `replay_actions` over every acted step, plus 'mean_run': the
  mean length of runs of steps that repeat the previous sampled action (a loop that copies
  its last action has long runs; the expert's own figure is 'logged_mean_run')."""
  task_tokenizer = policy.task_tokenizer
  predicted = replay_actions(policy, episodes, seeds, forced)
  logged = [logged_action_tokens(task_tokenizer, e) for e in episodes]
  actions = np.concatenate([task_tokenizer.spec.check_steps(*e)[1] for e in episodes])
  out = compare(task_tokenizer, np.concatenate(predicted), np.concatenate(logged), actions)
  out['mean_run'] = mean_run(predicted)
  out['logged_mean_run'] = mean_run(logged)
  return out


def mean_run(episodes_tokens: Sequence[np.ndarray]) -> float:
  """Mean length of the runs of equal consecutive actions, over episodes' tokens [T, A]."""
  lengths = []
  for tokens in episodes_tokens:
    repeats = np.all(tokens[1:] == tokens[:-1], axis=1)
    runs = 1 + len(repeats) - int(np.count_nonzero(repeats))
    lengths.append(len(tokens) / runs)
  return float(np.mean(lengths))
