"""Every registered public source maps onto its spec, read offline through each dataset's features.

RL Unplugged builders are registered in TFDS's code, so their step features are known offline;
Open X-Embodiment's live with their files in Google Cloud Storage, so each dataset's published
step features (its TFDS catalog page, written out in data_pipelines/mock_rlds.py) are saved
where TFDS looks. Either way one mock episode of valid values (mock_rlds.episode), encoded with
those features, goes through the reader.
"""

import json

import ml_collections
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from configs import models, public_rlds
from data_pipelines import mock_rlds
from data_pipelines.public_rlds import read_public_episodes
from gato_jax import specs
from gato_jax import tokenizer as tok
from gato_jax.data import public_catalog
from gato_jax.model import ModelOptions, check_task_fits

SOURCES = public_catalog.SOURCES
STEPS = mock_rlds.STEPS
INSTRUCTION = mock_rlds.INSTRUCTION
EPISODE_ID = mock_rlds.EPISODE_ID


# ----------------------------------------------------------------------------------------
# The catalog itself.
# ----------------------------------------------------------------------------------------


PREFIXES = {
  'atari': 'rlu_atari_',
  'dmc': 'rlu_control_suite_',
  'dmlab': 'rlu_dmlab_',
  'oxe': 'oxe_',
}


def test_every_source_maps_every_field_of_an_existing_spec():
  counts = {domain: 0 for domain in PREFIXES}
  for name, source in SOURCES.items():
    assert set(source) == {'dataset', 'data_dir', 'spec', 'observation', 'action', 'domain'}
    assert name.startswith(PREFIXES[source['domain']]), name
    counts[source['domain']] += 1
    spec = specs.get_spec(source['spec'])
    assert set(source['observation']) == {field.name for field in spec.observation}, name
  assert counts == {'atari': 46, 'dmc': 9, 'dmlab': 5, 'oxe': 10}


def test_all_atari_games_share_one_mapping_and_any_run_is_one_call():
  atari = {n: s for n, s in SOURCES.items() if s['domain'] == 'atari'}
  assert len(atari) == len(public_catalog.ATARI_GAMES) == 46
  assert SOURCES['rlu_atari_mspacman']['dataset'] == 'rlu_atari/MsPacman_run_1'
  for source in atari.values():
    assert {**source, 'dataset': None} == {**SOURCES['rlu_atari_pong'], 'dataset': None}
  assert public_catalog.atari_source('Pong', 3)['dataset'] == 'rlu_atari/Pong_run_3'
  with pytest.raises(ValueError, match='runs 1 to 5, got 6'):
    public_catalog.atari_source('Pong', 6)
  with pytest.raises(ValueError, match="unknown RL Unplugged Atari game 'pong'"):
    public_catalog.atari_source('pong', 1)


def test_the_catalog_lists_every_game_and_config_tfds_has():
  games = {c.name.rsplit('_run_', 1)[0] for c in tfds.builder_cls('rlu_atari').BUILDER_CONFIGS}
  assert games == set(public_catalog.ATARI_GAMES)
  configs = {c.name for c in tfds.builder_cls('rlu_control_suite').BUILDER_CONFIGS}
  assert {s['dataset'].split('/')[1] for s in SOURCES.values() if s['domain'] == 'dmc'} == configs


def test_the_cli_config_is_the_catalog_and_overriding_it_leaves_the_catalog_alone():
  sources = public_rlds.get_config().sources
  assert sources.to_dict() == SOURCES
  sources.oxe_kuka.action.append('action/terminate_episode')
  assert 'action/terminate_episode' not in SOURCES['oxe_kuka']['action']


def test_dataset_specs_fit_the_paper_model_with_room_for_several_timesteps():
  model = ModelOptions.from_model_config(models.model_config('1b2'))
  for name, spec in specs.DATASET_SPECS.items():
    check_task_fits(spec, model)
    if name.startswith('oxe_'):
      assert spec.tokens_per_timestep < 300, name
    for field in spec.observation:
      if isinstance(field, tok.ImageField):
        assert field.height % tok.PATCH_SIZE == 0 and field.width % tok.PATCH_SIZE == 0


# ----------------------------------------------------------------------------------------
# Mock episodes: mock_rlds's valid values, encoded as the dataset's files hold them.
# ----------------------------------------------------------------------------------------


def _stacked(encoded):
  # TFDS 4.9.10 encodes a value inside a nested Dataset as a list of arrays, which tf.data
  # cannot convert (mock_data's own generator fails on strings): stack every list.
  if isinstance(encoded, dict):
    return {k: _stacked(v) for k, v in encoded.items()}
  if isinstance(encoded, list):
    if np.asarray(encoded[0]).dtype.kind in 'OSU':
      return np.array([np.asarray(v).item() for v in encoded], dtype=object)
    return np.stack(encoded)
  return encoded


def _as_dataset(builder, *args, **kwargs):
  """Stands in for reading the files: one mock_rlds episode, encoded with the features."""
  features = builder.info.features
  encoded = _stacked(features.encode_example(mock_rlds.episode(features)))
  signature = tf.nest.map_structure(
    lambda info: tf.TensorSpec(info.shape, info.tf_dtype), features.get_serialized_info()
  )
  ds = tf.data.Dataset.from_generator(lambda: iter([encoded]), output_signature=signature)
  return ds.map(features.decode_example)


def _lookup(step: dict, path: str):
  for key in path.split('/'):
    step = step[key]
  return step


def _expected(step_feature, paths) -> np.ndarray:
  """What the reader should make of `paths` over the mock episode: the source's values."""
  steps = [mock_rlds.value(step_feature, t) for t in range(STEPS)]
  if isinstance(paths, str):
    return np.stack([np.asarray(_lookup(s, paths)) for s in steps])
  return np.stack(
    [
      np.concatenate([np.asarray(_lookup(s, p), np.float32).reshape(-1) for p in paths])
      for s in steps
    ]
  )


def _check_episode(episode, source: dict, step_feature) -> None:
  """The episode fits its spec field by field, and carries the mapped values."""
  spec = specs.get_spec(source['spec'])
  assert episode.task == source['spec'] and episode.env == source['dataset']
  for field in spec.observation:
    value = episode.observations[field.name]
    if isinstance(field, tok.ImageField):
      assert value.shape == (STEPS, field.height, field.width, 3) and value.dtype == np.uint8
      # Resized from the source frame: the bright top half stays on top.
      assert value[0, 2, 2].tolist() == [200] * 3 and value[0, -3, 2].tolist() == [0] * 3
    elif isinstance(field, tok.TextField):
      assert value.tolist() == [INSTRUCTION] * STEPS
    else:
      assert value.shape == (STEPS, *field.shape), field.name
      expected = _expected(step_feature, source['observation'][field.name])
      np.testing.assert_allclose(value, expected.reshape(value.shape), err_msg=field.name)
  assert episode.actions.shape == (STEPS, *spec.action.shape)
  expected = _expected(step_feature, source['action']).reshape(episode.actions.shape)
  np.testing.assert_allclose(episode.actions, expected)
  if isinstance(spec.action, tok.ContinuousField):
    assert episode.actions.dtype == np.float32
  assert episode.rewards.shape == (STEPS,) and episode.is_terminal


# ----------------------------------------------------------------------------------------
# RL Unplugged: code-registered builders, features known offline. One Atari game stands for
# all (their mappings are equal, above).
# ----------------------------------------------------------------------------------------

RLU_SOURCES = [
  'rlu_atari_pong',
  *(n for n, s in SOURCES.items() if s['domain'] in ('dmc', 'dmlab')),
]


@pytest.mark.parametrize('name', RLU_SOURCES)
def test_rl_unplugged_episodes_fit_their_spec(name):
  source = SOURCES[name]
  step_feature = tfds.builder(source['dataset']).info.features['steps'].feature
  with tfds.testing.mock_data(num_examples=1, as_dataset_fn=_as_dataset):
    (episode,) = read_public_episodes(ml_collections.ConfigDict(source))
  _check_episode(episode, source, step_feature)
  assert episode.seed == EPISODE_ID


# ----------------------------------------------------------------------------------------
# Open X-Embodiment: the published step features of each dataset (mock_rlds.OXE_FEATURES),
# saved as a prepared dataset's metadata.
# ----------------------------------------------------------------------------------------


OXE_SOURCES = [n for n, s in SOURCES.items() if s['domain'] == 'oxe']


def _write_metadata(data_dir, dataset: str, features: tfds.features.FeaturesDict) -> None:
  """What TFDS reads of a prepared dataset before its files: its info and its features."""
  version_dir = data_dir / dataset / public_catalog.OXE_VERSION
  version_dir.mkdir(parents=True)
  features.save_config(str(version_dir))
  info = {'name': dataset, 'version': public_catalog.OXE_VERSION, 'splits': [{'name': 'train'}]}
  (version_dir / 'dataset_info.json').write_text(json.dumps(info))


def _read(source: dict, data_dir) -> list:
  with tfds.testing.mock_data(data_dir=str(data_dir), as_dataset_fn=_as_dataset):
    return list(read_public_episodes(ml_collections.ConfigDict(source), data_dir=str(data_dir)))


def _dataset(name: str) -> str:
  return SOURCES[name]['dataset'].split(':')[0]


def test_every_oxe_source_has_its_published_features_here():
  assert sorted(_dataset(n) for n in OXE_SOURCES) == sorted(mock_rlds.OXE_FEATURES)
  assert len(OXE_SOURCES) == 10
  for name in OXE_SOURCES:
    assert SOURCES[name]['dataset'].endswith(':0.1.0')
    assert SOURCES[name]['data_dir'] == 'gs://gresearch/robotics'


@pytest.mark.parametrize('name', OXE_SOURCES)
def test_open_x_embodiment_episodes_fit_their_spec(name, tmp_path):
  features = mock_rlds.oxe_features(_dataset(name))
  _write_metadata(tmp_path, _dataset(name), features)
  (episode,) = _read(SOURCES[name], tmp_path)
  _check_episode(episode, SOURCES[name], features['steps'].feature)


@pytest.mark.parametrize('name', OXE_SOURCES)
def test_an_oxe_feature_that_does_not_fit_names_dataset_episode_and_field(name, tmp_path):
  source = SOURCES[name]
  first_part = source['action'] if isinstance(source['action'], str) else source['action'][0]
  features = mock_rlds.oxe_features(_dataset(name), widen=first_part)
  _write_metadata(tmp_path, _dataset(name), features)
  width = specs.get_spec(source['spec']).action.shape[0]
  message = (
    rf"dataset {source['dataset']}, episode 0: task '{source['spec']}', field 'action': "
    rf'expected shape \({width},\) per step for {STEPS} steps, got \({width + 1},\)'
  )
  with pytest.raises(ValueError, match=message):
    _read(source, tmp_path)
