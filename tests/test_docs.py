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
