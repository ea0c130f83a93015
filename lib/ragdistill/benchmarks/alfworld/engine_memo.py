"""Memoized parsing for ALFWorld's TextWorld engine: the same games, a fraction of the CPU.

Starting an ALFWorld game translates its PDDL domain and problem to SAS twice (plain, and optimized for the
replanner), and TextWorld translates them twice more on every reset; each step parses the text grammar's
templates and the logic's queries again with TatSu, one per admissible command. On 2 cores that is about 3 s
per episode start and 0.16 s per step, time the model's threads wait for. `install()` memoizes the three pure
functions behind it, per process:

- `fast_downward.pddl2sas(domain, problem, verbose, optimize)`: the translated task and its SAS text (read
  only by `PddlState`), translated once per game; the replanner, which AlfworldEnv never calls (it asks for
  neither policy commands nor a computed walkthrough), is handed the plain translation;
- the text grammar's and the logic's `_parse_and_convert(text, rule_name=...)`: each call gets a deep copy
  of the parsed result, so a caller that fills in a symbol's context changes nothing that is kept.

The observations, admissible commands and outcomes are the engine's own (tests/test_engine_memo.py plays
games both ways in separate processes and compares every step).
"""

from __future__ import annotations

import copy
import functools
import threading

_LOCK = threading.Lock()
_INSTALLED = False
# Translations kept per process (about 5 MB each): the last games started; an env worker plays a game once per
# condition and agent.
TRANSLATIONS = 32
PARSES = 4096


def _copying(fn, maxsize: int):
    """`fn` memoized on its arguments, returning a deep copy of the kept result each call."""
    kept = functools.lru_cache(maxsize=maxsize)(lambda args, kwargs: fn(*args, **dict(kwargs)))

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return copy.deepcopy(kept(args, tuple(sorted(kwargs.items()))))

    wrapper.cache_info = kept.cache_info
    return wrapper


def install() -> None:
    """Memoize the engine's translation and parsing in this process (idempotent)."""
    global _INSTALLED
    with _LOCK:
        if _INSTALLED:
            return
        import fast_downward
        import textworld.logic as logic
        import textworld.envs.pddl.textgen as textgen

        translate = fast_downward.pddl2sas

        @functools.lru_cache(maxsize=TRANSLATIONS)
        def plain(domain: str, problem: str, verbose: bool):
            return translate(domain, problem, verbose=verbose, optimize=False)

        def pddl2sas(domain: str, problem: str, verbose: bool = False, optimize: bool = False):
            # The optimized translation only feeds the engine's replanner, which runs only when a game is started
            # asking for policy commands or a computed walkthrough; AlfworldEnv asks for neither. The replanner
            # gets the plain translation of the same task instead (a valid task; its plans would just be searched
            # on more variables).
            return plain(domain, problem, verbose)

        fast_downward.pddl2sas = pddl2sas
        textgen._parse_and_convert = _copying(textgen._parse_and_convert, PARSES)
        logic._parse_and_convert = _copying(logic._parse_and_convert, PARSES)
        _INSTALLED = True


def installed() -> bool:
    return _INSTALLED
