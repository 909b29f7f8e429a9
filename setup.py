"""gato-jax: a JAX/Flax implementation of DeepMind's Gato for TPU pods.

Version bounds are the ones tested together (see docs/installation.md); widen them only
after the suite passes on the new versions.
"""

import setuptools

JAX = '0.12.0.1'
LIBTPU = 'libtpu==0.0.52'

setuptools.setup(
  name='gato-jax',
  version='0.1.0',
  description='Gato in JAX/Flax: seqio data, sharded training, Orbax checkpoints, evaluation.',
  python_requires='>=3.12',
  packages=setuptools.find_packages(
    include=['gato_jax', 'gato_jax.*', 'data_pipelines', 'data_pipelines.*']
  ),
  install_requires=[
    f'jax>={JAX},<0.13',
    'flax>=0.12.12,<0.13',
    'optax>=0.2.8,<0.3',
    'orbax-checkpoint>=0.12.8,<0.13',
    'tensorflow>=2.21,<2.22',  # seqio and tfds run their pipelines on tf.data.
    'tensorflow-datasets>=4.9.10,<4.10',
    'importlib_resources>=6',  # tfds needs it to build datasets but does not declare it.
    'seqio>=0.0.20,<0.0.21',
    'sentencepiece>=0.2.3,<0.3',
    'ml-collections>=1.1,<1.2',
    'gymnasium>=1.4,<1.5',
    'absl-py>=2.1',
    'numpy>=2.0,<3',
    'matplotlib>=3.9,<4',  # The evaluator's figure-5 plot.
  ],
  extras_require={
    # Real environments. mujoco is pinned to the one version on which both dm-control and
    # metaworld run (platform_notes.md): 4.x breaks both, 3.16 breaks dm-control.
    'envs': [
      'mujoco==3.17.0',
      'dm-control==1.0.50',
      'metaworld==3.0.0',
      'ale-py>=0.12.1,<0.13',
      'minigrid>=3.2,<3.3',
      'gymnasium[classic-control,box2d]>=1.4,<1.5',
    ],
    'dev': ['pytest>=8', 'pytest-xdist>=3.5', 'hypothesis>=6.100', 'ruff>=0.15'],
    # `tensorboard --logdir WORKDIR`: the trainer's scalars and, with the profile plugin,
    # the traces of config.profile_steps.
    'viz': ['tensorboard>=2.21,<2.22', 'tensorboard-plugin-profile>=2.24,<2.25'],
    # TPU VMs. libtpu 0.0.52, not jax[tpu]'s 0.0.50: it is MaxText 0.2.5's pairing with jax
    # 0.12.0.1, and its compiler gives gato_1b2 3 GiB less per v5e chip (installation.md).
    'tpu': [LIBTPU],
    # libtpu for `python -m gato_jax.aot`: compiles for a TPU slice on any machine (CPU too).
    'aot': [LIBTPU],
    'cuda': [f'jax[cuda12]=={JAX}'],
  },
)
