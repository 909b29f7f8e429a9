"""Examples in the docs run and print what the docs say they print."""

import contextlib
import io
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _blocks(markdown: str, heading: str) -> tuple[str, str]:
  """The first python block after `heading` and the text block that follows it."""
  section = markdown[markdown.index(heading) :]
  code = re.search(r'```python\n(.*?)```', section, re.S).group(1)
  output = re.search(r'```python\n.*?```\s*```text\n(.*?)```', section, re.S).group(1)
  return code, output


def test_tokenization_worked_example_matches_the_code():
  code, expected = _blocks((ROOT / 'docs/tokenization.md').read_text(), '## Worked example')
  stdout = io.StringIO()
  with contextlib.redirect_stdout(stdout):
    exec(compile(code, 'docs/tokenization.md', 'exec'), {})
  assert stdout.getvalue() == expected


def test_adding_a_dataset_example_trains_on_the_new_mixture():
  code, expected = _blocks((ROOT / 'docs/adding_a_dataset.md').read_text(), '## Example')
  stdout = io.StringIO()
  with contextlib.redirect_stdout(stdout):
    exec(compile(code, 'docs/adding_a_dataset.md', 'exec'), {})
  assert stdout.getvalue().splitlines()[-1] == expected.strip()
  import seqio

  mixture = seqio.get_mixture_or_task('cartpole_expert_and_random')
  assert {t.name for t in mixture.tasks} == {'gato_cartpole', 'gato_cartpole_random'}


def test_adding_a_dataset_shows_the_robot_example_files_as_they_are():
  """The walkthrough's script and config are docs/examples/, which
  tests/test_public_rlds_cli.py runs with the doc's own commands."""
  blocks = re.findall(r'```python\n(.*?)```', (ROOT / 'docs/adding_a_dataset.md').read_text(), re.S)
  for name in ('write_my_robot.py', 'my_robot_config.py'):
    assert (ROOT / 'docs/examples' / name).read_text() in blocks, name


def _markdown_files() -> list[pathlib.Path]:
  docs = sorted((ROOT / 'docs').glob('*.md'))
  return [ROOT / 'README.md', *docs, *sorted((ROOT / 'launch').glob('*.md'))]


def test_relative_links_in_the_docs_resolve():
  """Every `](path)` link to a local file points at one that exists (anchors and URLs aside)."""
  broken = []
  for doc in _markdown_files():
    for target in re.findall(r'\]\(([^)\s]+)\)', doc.read_text()):
      if re.match(r'[a-z][a-z0-9+.-]*:', target) or target.startswith('#'):
        continue  # http(s), mailto, ... and anchors within the same page.
      path = target.split('#', 1)[0]
      if not (doc.parent / path).exists():
        broken.append(f'{doc.relative_to(ROOT)}: {target}')
  assert not broken, broken


def test_configs_reference_lists_every_key():
  """docs/configs.md names each key of the demo and paper configs as `key`."""
  from configs import demo, gato_1b2, gato_79m, gato_364m

  def keys(config, prefix=''):
    for k, v in config.items():
      if hasattr(v, 'items'):
        yield from keys(v, f'{prefix}{k}.')
      else:
        yield prefix + k

  text = (ROOT / 'docs/configs.md').read_text()
  missing = sorted(
    {k for m in (demo, gato_79m, gato_364m, gato_1b2) for k in keys(m.get_config())}
    - set(re.findall(r'`([a-z_][a-z0-9_.]*)`', text))
  )
  assert not missing, f'docs/configs.md does not describe: {missing}'


def test_architecture_names_every_module_and_only_modules_that_exist():
  """docs/architecture.md's ownership tables cover gato_jax/ and name no file that is gone."""
  text = (ROOT / 'docs/architecture.md').read_text()
  unnamed = []
  for path in sorted((ROOT / 'gato_jax').rglob('*.py')):
    rel = path.relative_to(ROOT / 'gato_jax')
    if rel == pathlib.Path('__init__.py'):
      continue  # The package itself.
    if rel.name == '__init__.py':
      names = (f'{rel.parent}/', f'{rel.parent}/__init__.py')
    else:
      names = (str(rel), f'`{rel.stem}`')
    if not any(n in text for n in names):
      unnamed.append(str(rel))
  assert not unnamed, f'modules docs/architecture.md does not name: {unnamed}'
  stale = []
  for name in re.findall(r'`((?:gato_jax|data_pipelines|benchmarks)/[\w/]+\.py)`', text):
    if not (ROOT / name).exists():
      stale.append(name)
  for name in re.findall(r'`((?:data|model|specs|envs)/\w+\.py)`', text):
    if not (ROOT / 'gato_jax' / name).exists():
      stale.append(name)
  assert not stale, f'docs/architecture.md names files that do not exist: {stale}'


def test_reliability_table_names_only_tests_that_exist():
  """Every row of docs/reliability.md points at a test, and that test is in the suite."""
  text = (ROOT / 'docs/reliability.md').read_text()
  headers = ('| fault', '| ---')
  rows = [r for r in text.splitlines() if r.startswith('| ') and not r.startswith(headers)]
  assert len(rows) > 30
  untested = [r[:80] for r in rows if 'tests/test_' not in r.split('|')[-2]]
  assert not untested, f'rows of docs/reliability.md without a test: {untested}'
  missing = []
  for file, name in re.findall(r'`(tests/test_\w+\.py)::(\w+)', text):
    source = (ROOT / file).read_text() if (ROOT / file).exists() else ''
    if f'def {name}(' not in source:
      missing.append(f'{file}::{name}')
  assert not missing, f'docs/reliability.md names tests that do not exist: {missing}'


def test_public_sources_doc_is_the_registry():
  """docs/public_sources.md ends with `public_rlds list`'s table: the mapping the reader runs."""
  from data_pipelines import public_rlds
  from gato_jax.data import tasks  # noqa: F401 - registers the catalog's sources.

  text = (ROOT / 'docs' / 'public_sources.md').read_text()
  table = public_rlds.sources_markdown()
  assert text.endswith(table), 'regenerate: python -m data_pipelines.public_rlds list'
