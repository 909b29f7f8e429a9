"""Shared test set-up: 8 fake CPU devices (as `make test` exports) and offline vocabularies."""

import os

# Before anything imports jax: sharding tests need a multi-device mesh on a CPU machine.
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
# The tests compile hundreds of small programs and run each for a few steps, so LLVM's
# optimization of the CPU code costs more than it saves. Level 0 leaves the numerics to
# float rounding (the tiny run's losses agree to 1e-7); the processes tests start inherit
# these flags, so values a test compares across processes come from the same code.
if '--xla_backend_optimization_level' not in os.environ['XLA_FLAGS']:
  os.environ['XLA_FLAGS'] += ' --xla_backend_optimization_level=0'
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# libtpu (the `aot` extra) would otherwise be tried as a backend by every JAX process, each
# taking its lock file: the tests run on CPU and only compile for TPU topologies.
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')
# One persistent compilation cache for the run, made by the first process to import this
# (pytest, or xdist's controller) and inherited by its workers and by the trainers, launchers
# and tools the tests start: many tests compile the same tiny programs, and a hit costs a
# fraction of a compile (the tiny 10-step training run: 57 s cold, 17 s warm). The cache
# is new each run, so a run's time is a cold start's, and keyed by JAX on the program,
# flags and versions, so a hit is the same executable.
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  import atexit
  import shutil
  import tempfile

  _cache = tempfile.mkdtemp(prefix='gato_jax_test_compilation_cache_')
  os.environ['JAX_COMPILATION_CACHE_DIR'] = _cache
  os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)

import pytest  # noqa: E402

_COLORS = ('red', 'green', 'blue', 'purple', 'yellow', 'grey')
_OBJECTS = ('ball', 'box', 'key', 'door')
_VERBS = ('go to', 'pick up', 'open', 'put next to')


@pytest.fixture(scope='session')
def byte_vocabulary():
  import seqio

  return seqio.ByteVocabulary()


@pytest.fixture(scope='session')
def sentencepiece_vocabulary(tmp_path_factory):
  """A small SentencePiece model trained here on BabyAI-style missions (nothing downloaded)."""
  import seqio

  from data_pipelines.sentencepiece_model import train_sentencepiece

  texts = [f'{v} the {c} {o}' for v in _VERBS for c in _COLORS for o in _OBJECTS] * 3
  path = train_sentencepiece(texts, str(tmp_path_factory.mktemp('spm') / 'missions'), 64)
  return seqio.SentencePieceVocabulary(path)
