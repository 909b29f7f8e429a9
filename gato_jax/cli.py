"""How every gato-jax command ends: a failure's cause is the last line of stderr.

  if __name__ == '__main__':
    define_flags()
    cli.run(main)            # instead of absl's app.run(main)

A command that stops on bad input (a config key, a path, a flag, a checkpoint of another
model) prints `error: <cause>` as its very last line and exits 2; the cause is what a
person reads first and what a launcher's log tail shows, so nothing may come after it. An
unexpected exception keeps its traceback (it is a bug, and the traceback is for finding
it), then ends with the same one-line `error: <Type>: <message>` and exit 1. Expected
errors log their traceback only at `--verbosity=1`.

Expected failures are `EXPECTED_ERRORS`: ValueError (every config check raises one naming
its key), OSError (a missing or misplaced file, a full disk: the message names the path),
FloatingPointError (the trainer's NaN stop) and `CommandError`, for code that has a cause
to report but no better type.

Flags are parsed here too, so that a bad flag or an unknown config key
(`--config.no_such_key=1`, which ml_collections reports as a bare AttributeError) is one
line naming the flag, not a traceback from inside the flag parser.

`sigterm_during_startup` covers the seconds before a command has anything to save: a
SIGTERM then ends the process as SIGTERM always did (status 143), after one line saying
what it was doing. The trainer's own handler (gato_jax/preemption.py) takes over once
training starts.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

from absl import app, flags, logging


class CommandError(Exception):
  """An expected failure whose message is the whole cause; no traceback is shown."""


EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
  CommandError,
  ValueError,
  OSError,  # FileNotFoundError, NotADirectoryError, PermissionError, a full disk: named paths.
  FloatingPointError,
)
EXIT_EXPECTED = 2  # Bad input: the command line, the config, a path, the data.
EXIT_UNEXPECTED = 1  # A bug or an environment failure; the traceback comes first.


def one_line(error: BaseException) -> str:
  """The cause on one line: the message's lines joined, the type named unless it says nothing.

  A ValueError's or CommandError's message is the cause as written; an OSError's names
  its file already. Any other type is named, since `KeyError: 'x'` needs its type to read.
  """
  lines = [part.strip() for part in str(error).splitlines() if part.strip()]
  if 'Traceback (most recent call last):' in lines:
    # ml_collections puts a config file's own traceback inside its flag error: keep the
    # words before it and the exception it ends with.
    lines = [lines[0], lines[-1]]
  message = ' '.join(lines)
  if isinstance(error, (CommandError, ValueError, OSError)) and message:
    return message
  return f'{type(error).__name__}: {message}' if message else type(error).__name__


def exit_with(cause: str, code: int) -> NoReturn:
  """Prints `error: <cause>` as stderr's last line and exits with `code`.

  Logs and stdout are flushed first, so that nothing buffered lands after the cause. In a
  multi-process run (jax.distributed initialized) the process ends with os._exit: the
  distributed runtime's shutdown at interpreter exit waits on every other process and
  logs its own failure after ours, burying the cause; a failed process has nothing left
  to save (the trainer's `finally` already closed its checkpoints).
  """
  with contextlib.suppress(Exception):
    logging.flush()
  sys.stdout.flush()
  sys.stderr.write(f'error: {cause}\n')
  sys.stderr.flush()
  if _distributed():
    os._exit(code)
  sys.exit(code)


def _distributed() -> bool:
  """Whether this process joined a jax.distributed cluster (without importing jax here)."""
  jax = sys.modules.get('jax')
  if jax is None:
    return False
  try:
    from jax._src import distributed  # noqa: PLC0415 - only when jax is already loaded.

    return distributed.global_state.client is not None
  except Exception:  # An internal that moved: fall back on a plain exit.
    return False


def guarded(main: Callable[[list[str]], Any]) -> Callable[[list[str]], Any]:
  """`main`, with every exception but a UsageError ending in one line of cause."""

  def run_main(argv: list[str]) -> Any:
    try:
      return main(argv)
    except app.UsageError:
      raise  # absl prints the usage, with the error as its last line.
    except EXPECTED_ERRORS as e:
      logging.debug('the traceback of the error below:\n%s', traceback.format_exc())
      exit_with(one_line(e), EXIT_EXPECTED)
    except Exception as e:
      traceback.print_exc()
      exit_with(one_line(e), EXIT_UNEXPECTED)

  return run_main


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a bad flag or config override ending in one line of cause.

  absl's own parser prints its error and then a help hint, so the hint would be last;
  ml_collections raises AttributeError or KeyError from inside the parser for an unknown
  `--config.<key>`, naming only the last component, so the flag is found in `argv`.
  """
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.stderr.write('Pass --helpshort or --helpfull to see help on flags.\n')
    exit_with(one_line(e), EXIT_EXPECTED)
  except (AttributeError, KeyError) as e:
    if not any(re.match(r'--?\w+\.\w', a) for a in argv[1:]):
      raise  # Not an override's: a bug, with its traceback.
    exit_with(_unknown_override(argv, e), EXIT_EXPECTED)
  except EXPECTED_ERRORS as e:
    exit_with(one_line(e), EXIT_EXPECTED)


def _unknown_override(argv: list[str], error: BaseException) -> str:
  """`--config.model.num_layer: the config has no key 'num_layer'; did you mean ...`."""
  chain: list[BaseException] = []
  link: BaseException | None = error
  while link is not None and len(chain) < 10:
    chain.append(link)
    link = link.__cause__ or link.__context__
  # ml_collections raises KeyError(key), then re-raises it with a suggestion.
  key = next((str(e.args[0]) for e in reversed(chain) if isinstance(e, KeyError) and e.args), '')
  texts = ' '.join(str(a) for e in chain for a in e.args)
  suggestion = re.search(r'Did you mean "([\w.-]+)"', texts)
  overrides = [a.split('=', 1)[0] for a in argv[1:] if re.match(r'--?\w+\.\w', a)]
  named = [o for o in overrides if key and key in o.lstrip('-').split('.')[1:]]
  flag = named[0] if named else ', '.join(overrides) or 'a --config override'
  hint = f'; did you mean {suggestion.group(1)!r}?' if suggestion else ''
  if key and not re.search(r'\s', key):
    what = f'no key {key!r}'
  else:
    what = f'no such key ({key or one_line(error)})'
  return f'{flag}: the config has {what}{hint}'


def run(main: Callable[[list[str]], Any]) -> NoReturn:
  """absl's app.run for a gato-jax command: the last line of a failure is its cause."""
  app.run(guarded(main), flags_parser=parse_flags)
  raise AssertionError('app.run returned')  # It always exits; this keeps NoReturn honest.


# ----------------------------------------------------------------------------------------
# SIGTERM before there is anything to save
# ----------------------------------------------------------------------------------------


_phase: list[str] = []  # What the command is doing, innermost last, for the SIGTERM line.


@contextlib.contextmanager
def sigterm_during_startup(what: str, consequence: str = 'without a checkpoint'
                           ) -> Iterator[None]:
  """While inside, SIGTERM prints `SIGTERM during start-up (<what>): exiting <consequence>`.

  Then the process dies of SIGTERM, as it would have without the handler (status 143),
  so launchers and supervisors see what they saw before, plus the line. Python runs the
  handler between bytecodes, so a compile or restore in progress in C++ finishes first
  (a scheduler's SIGKILL after its grace period still ends it, as before). A `phase` inside
  names itself instead (`SIGTERM during generation of cartpole ...`). Off the main thread,
  where Python cannot take a signal, this does nothing; a handler that someone installs
  inside (the trainer's preemption handler, once training starts) stays in charge until
  it restores ours.
  """
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  _phase.append(f'start-up ({what})')
  depth = len(_phase)

  def handle(signum: int, frame: Any) -> None:
    del frame
    with contextlib.suppress(Exception):
      sys.stdout.flush()
    sys.stderr.write(f'\nSIGTERM during {_phase[-1] if _phase else what}: exiting '
                     f'{consequence}\n')
    sys.stderr.flush()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)

  previous = signal.signal(signal.SIGTERM, handle)
  try:
    yield
  finally:
    del _phase[depth - 1:]
    if signal.getsignal(signal.SIGTERM) is handle:
      signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def phase(what: str) -> Iterator[None]:
  """Names what a command is doing for `sigterm_during_startup`'s line (`generation of X`)."""
  _phase.append(what)
  try:
    yield
  finally:
    _phase.pop()
