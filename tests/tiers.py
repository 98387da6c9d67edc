"""The test tiers, assigned at collection so a new test lands in its tier without a marker.

- unit (no marker): in-process, no training, no subprocess, no Monte Carlo; `make test-fast` runs only these.
- integration: the test trains a model, starts a process or expands a sweep file. Found from the code: the test
  function, the fixtures it uses and the helpers in tests/ they call (transitively) reach one of STARTS_WORK below.
- simulation: Monte-Carlo operating characteristics and numerics at the model's matrix sizes; marked by hand
  (`@pytest.mark.simulation`), since thousands of draws look like any other loop to a reader of bytecode.
`make test-fast` (pytest --unit) times every unit test and fails one over UNIT_CPU_LIMIT_S, saying which marker it
needs: a forgotten marker cannot slow the fast tier. CPU time, not wall time, so that another job on the machine
does not trip it (threads spinning for a busy core still count: on a crowded machine expect a border case).
"""
from __future__ import annotations

import inspect
import multiprocessing
import subprocess
import sys
import time
import types
import warnings
from pathlib import Path

import pytest
import torch.multiprocessing

from orthonoise import trainer
from orthonoise.sweep import plan

# What makes a test an integration test when its code reaches it: a whole training run, another process, or a whole
# sweep file expanded through Hydra's sweeper (every job composed: seconds per sweep).
STARTS_WORK = (subprocess, multiprocessing, torch.multiprocessing, trainer.train, plan.expand, plan.plan, plan.main)
TESTS = Path(__file__).resolve().parent  # helpers are followed inside tests/ only: the library is what is tested
NOT_UNIT = ("integration", "simulation", "slow", "gpu", "slurm", "rehearsal", "gpu_smoke")


def _code_objects(code: types.CodeType):
    """A code object and those nested in it (inner functions, lambdas, comprehensions)."""
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


def _imported(names: set) -> list:
    """The modules a function body may import (`from orthonoise import trainer` names `orthonoise`): any name of
    its code that is a loaded module's name. Over-inclusive at worst, which only errs towards integration."""
    return [sys.modules[name] for name in names if name in sys.modules]


def _referenced(func) -> list:
    """Every object a function's code names: its globals, its imports, what its closure holds, and the attributes
    of the modules among them (`subprocess.run`, `trainer.train`)."""
    func = inspect.unwrap(func)
    code = getattr(func, "__code__", None)
    if code is None:
        return []
    found = []
    for part in _code_objects(code):
        names = set(part.co_names)
        objects = [func.__globals__[n] for n in names if n in func.__globals__] + _imported(names) + _closure(func)
        found += objects + _attributes(objects, names)
    return found


def _attributes(objects: list, names: set) -> list:
    """The attributes the code can reach through the modules among `objects` (`from orthonoise import trainer`
    then `trainer.train`: two levels), followed until no new module turns up."""
    found, modules, seen = [], [o for o in objects if isinstance(o, types.ModuleType)], set()
    while modules:
        module = modules.pop()
        if id(module) in seen:
            continue
        seen.add(id(module))
        with warnings.catch_warnings():  # a module's deprecated attribute (numpy's np.bytes) warns when looked up
            warnings.simplefilter("ignore")
            reached = [getattr(module, n) for n in names if hasattr(module, n)]
        found += reached
        modules += [o for o in reached if isinstance(o, types.ModuleType)]
    return found


def _closure(func) -> list:
    """What an inner function (a fixture's factory) holds from the function that made it."""
    values = []
    for cell in func.__closure__ or ():
        try:
            values.append(cell.cell_contents)
        except ValueError:  # a cell not yet filled
            pass
    return values


def _own(obj) -> bool:
    code = getattr(inspect.unwrap(obj), "__code__", None) if callable(obj) else None
    return code is not None and Path(code.co_filename).is_relative_to(TESTS)


_VERDICTS: dict[int, bool] = {}  # id(function) -> starts_work; fixtures and helpers recur in many tests


def starts_work(func, seen: set | None = None) -> bool:
    """Does this function, or a helper in tests/ it calls, train a model or start a process?"""
    if id(func) in _VERDICTS:
        return _VERDICTS[id(func)]
    top, seen = seen is None, set() if seen is None else seen
    if id(func) in seen:  # a cycle: its other members decide
        return False
    seen.add(id(func))
    verdict = any(any(obj is entry for entry in STARTS_WORK) or (_own(obj) and starts_work(obj, seen))
                  for obj in _referenced(func))
    if verdict or top:  # a False inside a cycle may be partial: keep only the complete ones
        _VERDICTS[id(func)] = verdict
    return verdict


def _fixture_functions(item) -> list:
    defs = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
    return [d.func for name in item.fixturenames for d in defs.get(name, ())]


def is_integration(item) -> bool:
    return any(starts_work(f) for f in [getattr(item, "function", None), *_fixture_functions(item)] if f)


UNIT_CPU_LIMIT_S = 3.0  # CPU seconds (both cores count): about 2 s of a test on this 2-core machine; most take ms


def pytest_addoption(parser):
    parser.addoption("--unit", action="store_true",
                     help=f"the unit tier only (make test-fast); a test over {UNIT_CPU_LIMIT_S:g} CPU seconds fails")


def is_unit(item) -> bool:
    return not any(item.get_closest_marker(name) for name in NOT_UNIT)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if not item.get_closest_marker("integration") and is_integration(item):
            item.add_marker(pytest.mark.integration)
    if config.getoption("unit"):
        config.hook.pytest_deselected(items=[item for item in items if not is_unit(item)])
        items[:] = [item for item in items if is_unit(item)]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    if not item.config.getoption("unit"):
        return (yield)
    start = time.process_time()
    result = yield
    used = time.process_time() - start
    if used > UNIT_CPU_LIMIT_S:
        pytest.fail(f"{item.nodeid} took {used:.1f} s of CPU, over the unit tier's {UNIT_CPU_LIMIT_S:g} s: mark it "
                    "@pytest.mark.simulation if it is Monte Carlo, @pytest.mark.slow if it needs minutes, or make it "
                    "smaller (a test that trains or starts a process is marked integration by itself)", pytrace=False)
    return result
