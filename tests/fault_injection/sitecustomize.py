"""Fault injection for tests/test_faults.py, in the jobs of a real Snakemake run.

Python imports `sitecustomize` at start-up from the path; the fault tests put this folder on
PYTHONPATH of the snakemake command (its jobs inherit it). Nothing happens unless the environment
holds BERTGEOM_FAULT="<module>:<attribute>:<n>:<action>": when <module> is imported, its function
<attribute> (or Class.method) is wrapped so that its n-th call in this process

- kill:  SIGKILLs this process before running (a job killed mid-way: OOM killer, preemption);
- exit:  runs, then SIGKILLs this process (a job killed after its work, before Snakemake records it);
- hold:  waits, before running, until the file BERTGEOM_FAULT_RELEASE exists (a job still running).

Each call made is noted as a line in the file BERTGEOM_FAULT_TRACE, if set (the test sees that the
fault was reached).
"""

import functools
import importlib.abc
import importlib.util
import os
import signal
import sys
import threading
import time
from pathlib import Path


def _wrap(function, n: int, action: str):
    calls, lock = 0, threading.Lock()  # calls may come from several threads (the dump's writers)

    @functools.wraps(function)
    def faulty(*args, **kwargs):
        nonlocal calls
        with lock:
            calls += 1
            call = calls
        trace = os.environ.get("BERTGEOM_FAULT_TRACE")
        if trace:
            with open(trace, "a") as handle:
                handle.write(f"{os.getpid()} {function.__qualname__} {call}\n")
        if call == n and action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if call == n and action == "hold":
            release = Path(os.environ["BERTGEOM_FAULT_RELEASE"])
            while not release.exists():
                time.sleep(0.05)
        result = function(*args, **kwargs)
        if call == n and action == "exit":
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    return faulty


def _patch(module, attribute: str, n: int, action: str) -> None:
    *owner_path, name = attribute.split(".")
    owner = module
    for part in owner_path:
        owner = getattr(owner, part)
    setattr(owner, name, _wrap(getattr(owner, name), n, action))


class _Injector(importlib.abc.MetaPathFinder):
    """Patches the module right after it is executed, before anyone imports names from it."""

    def __init__(self, module: str, attribute: str, n: int, action: str):
        self.module, self.fault = module, (attribute, n, action)

    def find_spec(self, name, path=None, target=None):
        if name != self.module:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            _patch(module, *self.fault)

        spec.loader.exec_module = exec_module
        return spec


if os.environ.get("BERTGEOM_FAULT"):
    _module, _attribute, _n, _action = os.environ["BERTGEOM_FAULT"].split(":")
    assert _action in ("kill", "exit", "hold"), _action
    sys.meta_path.insert(0, _Injector(_module, _attribute, int(_n), _action))
