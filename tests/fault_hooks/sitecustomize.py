"""Test-only: poison inputs for the batch fault tests (tests/test_batch_faults.py).

Python imports ``sitecustomize`` at start-up from ``sys.path``; only a test that puts this folder
on ``PYTHONPATH`` gets it (the worker processes it spawns inherit the variable). It stands in for
a decoder bug that kills the process on one particular file: opening a file whose name ends in
``.poison-exit.png`` ends the process at once with ``os._exit(86)``; ``.poison-segv.png`` reads
address 0 through ctypes, a real segmentation fault (SIGSEGV). Nothing in sam2kit knows about
it: the hook is Python's audit event for ``open`` (``sys.addaudithook``).
"""

import os
import sys


def _poison(event, args):
    if event != "open" or not args or not isinstance(args[0], (str, bytes, os.PathLike)):
        return
    name = os.fsdecode(args[0])
    if name.endswith(".poison-exit.png"):
        os._exit(86)
    if name.endswith(".poison-segv.png"):
        import ctypes

        ctypes.string_at(0)


sys.addaudithook(_poison)
