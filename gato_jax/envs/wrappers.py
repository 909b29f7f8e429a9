"""Between a live environment and Gato's token stream: observations in, action tokens out.

`TokenizedEnv` wraps any env of `make_env`. Each observation comes back as the model's
input arrays for one timestep's observation tokens and the '|' separator, the positions the
policy appends before it samples an action; `step` takes the sampled action tokens and
de-tokenizes them for the env. Both directions go through the task's `TaskTokenizer`, the
code that tokenizes the stored episodes the model trained on, so a live episode and the
same episode read from a dataset give the same tokens (tests/test_wrappers.py replays
recorded episodes to check it).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import gymnasium as gym
import numpy as np

from gato_jax import specs
from gato_jax import tokenizer as tok
from gato_jax.model import inputs
from gato_jax.model.inputs import Inputs


def model_inputs(steps: tok.TokenizedSteps) -> Inputs:
  """T timesteps of tokens as the model's input arrays over T * N positions.

  Pixels and patch positions move from their per-image rows to the IMAGE positions they
  belong to; every other position gets zeros, as the input contract asks.
  """
  out = inputs.zeros((steps.tokens.size,))
  image = steps.kinds.reshape(-1) == tok.TokenKind.IMAGE
  for a in inputs.ARRAYS:
    if a.model_input:  # TokenizedSteps holds them under the same names.
      where = image if a.image_only else slice(None)
      out[a.name][where] = getattr(steps, a.name).reshape(-1, *a.trailing)
  return out


def action_inputs(task_tokenizer: specs.TaskTokenizer, action_tokens: np.ndarray) -> Inputs:
  """Sampled action tokens (all of an action's, or its first few) as input positions.

  Laid out as `tokenize_steps` lays out actions, so a context built while acting matches
  the tokens of the same episode read from a dataset.
  """
  action_tokens = np.asarray(action_tokens, np.int32).reshape(-1)
  out = inputs.zeros(action_tokens.shape)
  out['tokens'][:] = action_tokens
  out['kinds'][:] = task_tokenizer.spec.action_token_kind
  out['local_positions'][:] = tok.LOCAL_POSITION_ACTION
  return out


def sampling_range(task_tokenizer: specs.TaskTokenizer) -> tuple[int, int]:
  """[start, stop) of the ids an action token may be sampled from.

  The action kind's range (`TokenLayout.action_token_range`), narrowed for a discrete
  action to the values it has: a 3-way action never samples value 5.
  """
  spec, layout = task_tokenizer.spec, task_tokenizer.layout
  start, stop = layout.action_token_range(spec.action_kind)
  if isinstance(spec.action, tok.DiscreteField):
    stop = start + spec.action.num_values
  return start, stop


def _placeholder_action(spec: specs.TaskSpec) -> np.ndarray:
  """An action the spec accepts; its tokens are cut off, it only lets the timestep tokenize."""
  if isinstance(spec.action, tok.DiscreteField):
    return np.zeros(spec.action.shape, np.int64)
  return spec.action.from_unit(np.zeros(spec.action.shape, np.float32))


@dataclasses.dataclass(frozen=True)
class TokenizedObservation:
  """One live observation: its input positions (observation + '|') and the raw dict.

  The raw observation is kept for scripted policies (experts) that act on it directly.
  """

  inputs: Inputs
  raw: dict[str, Any]


def observation_inputs(
  task_tokenizer: specs.TaskTokenizer, observation: dict[str, Any]
) -> TokenizedObservation:
  """One observation's input positions (observation tokens and the separator).

  The live env's path and the replay of a logged episode (gato_jax/replay.py) both come here.
  """
  spec = task_tokenizer.spec
  steps = task_tokenizer.tokenize_timestep(observation, _placeholder_action(spec))
  positions = {k: v[: spec.observation_tokens + 1] for k, v in model_inputs(steps).items()}
  return TokenizedObservation(positions, observation)


class TokenizedEnv(gym.Wrapper):
  """Observations as `TokenizedObservation`s; actions as action tokens.

  Observations that the spec cannot represent raise a ValueError naming the field, as they
  do in the data pipeline; the evaluator counts that episode as failed.
  """

  def __init__(self, env: gym.Env, task_tokenizer: specs.TaskTokenizer):
    super().__init__(env)
    self.task_tokenizer = task_tokenizer
    spec = task_tokenizer.spec
    self._observation_positions = spec.observation_tokens + 1  # The separator included.
    start, stop = sampling_range(task_tokenizer)
    self.action_space = gym.spaces.Box(start, stop - 1, (spec.action_tokens,), np.int64)

  def tokenize_observation(self, observation: dict[str, Any]) -> TokenizedObservation:
    return observation_inputs(self.task_tokenizer, observation)

  def encode_action(self, observation: dict[str, Any], action: Any) -> np.ndarray:
    """An env action's tokens: how a scripted policy's action reaches the env through tokens.

    Continuous actions are binned, so the env receives the bin's centre, as it would from
    a model that imitated the policy perfectly.
    """
    steps = self.task_tokenizer.tokenize_timestep(observation, action)
    return steps.tokens[0, self._observation_positions :]

  def reset(self, **kwargs: Any) -> tuple[TokenizedObservation, dict[str, Any]]:
    observation, info = self.env.reset(**kwargs)
    return self.tokenize_observation(observation), info

  def step(self, action_tokens: np.ndarray) -> tuple[TokenizedObservation, float, bool, bool, dict]:
    action = self.task_tokenizer.detokenize_action(np.asarray(action_tokens))
    observation, reward, terminated, truncated, info = self.env.step(action)
    return self.tokenize_observation(observation), float(reward), terminated, truncated, info
