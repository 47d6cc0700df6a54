"""Start-up cost of the daemon's commands: libraries' optional imports the daemon never uses.

Two probes cost more than the whole replay loop, and neither serves a run:

1. numba and scipy. When scipy is installed (it arrives with the training extras), numba imports it twice while
it loads: `numba/__init__` imports `scipy` for a version check, and `numba.np.arraymath` (imported
when the first kernel is compiled or loaded from cache) calls `ensure_blas()`, which imports
`scipy.linalg.cython_blas` and with it all of `scipy.linalg`: about 0.35 s of a 0.5 s
`import numba` on an idle machine, for a replay that never calls BLAS.

The hook: while `numba.np.arraymath` has not finished importing, an import of scipy
*made by numba's own code* fails, so numba records `_HAVE_BLAS = False`. That flag only decides
how `np.correlate` / `np.convolve` are compiled inside njit (a plain loop instead of `np.dot`);
no run-time kernel uses them (nor np.dot / np.linalg: checked by tests/core/test_startup.py over
every module that defines an njit kernel). Once arraymath is loaded the hook is inert: `np.dot`
in a kernel compiled later still imports scipy.linalg as usual (`ensure_blas` at typing time, the
BLAS pointers at call time), and imports of scipy by anything other than numba are never touched.

2. pyarrow and pandas. pyarrow's compiled code imports pandas (when it is installed: it arrives
with the training extras) the first time `pa.array(...)` looks for a pandas input and whenever
`to_numpy()` initialises its pandas constants: about 0.3 s and 300 modules, in a process that holds
no pandas object. The hook refuses pandas to an import made *implicitly* while the daemon's own code
(a `himari.*` module) or pyarrow's Python layer calls compiled code, i.e. not by an `import`
statement: pyarrow then
converts numpy arrays exactly as without pandas installed. An explicit `import pandas` (or
`importlib.import_module`) anywhere still works; `Table.to_pandas()` called from daemon code
would fail with a message naming this module (the daemon never calls it: tests/core/test_startup.py
greps for it).

`install()` is called by the command line for the daemon's commands only (`himari train` and
`himari evaluate` keep the default behaviour).
"""

from __future__ import annotations

import sys
from importlib.machinery import ModuleSpec
from opcode import opmap
from types import FrameType

_BOOTSTRAP = "<frozen importlib"
_IMPORT_NAME = opmap["IMPORT_NAME"]


def _numba_is_loading_blas() -> bool:
    """True until numba.np.arraymath has run its BLAS check."""
    arraymath = sys.modules.get("numba.np.arraymath")
    return arraymath is None or not hasattr(arraymath, "_HAVE_BLAS")


def _asker(frame: FrameType | None) -> FrameType | None:
    """The first frame outside the import machinery: the code that caused the import."""
    while frame is not None and frame.f_code.co_filename.startswith(_BOOTSTRAP):
        frame = frame.f_back
    return frame


def _module(frame: FrameType | None) -> str:
    return "" if frame is None else str(frame.f_globals.get("__name__", ""))


def _implicit_from_daemon(frame: FrameType | None) -> bool:
    """True when daemon code (or pyarrow's Python layer, which the daemon calls) is running
    something other than an import statement: the import comes from compiled code it called
    (pyarrow's pandas probe)."""
    if not (_is(_module(frame), "himari") or _is(_module(frame), "pyarrow")):
        return False
    assert frame is not None
    code = frame.f_code.co_code
    return not (0 <= frame.f_lasti < len(code) and code[frame.f_lasti] == _IMPORT_NAME)


def _is(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


class LeanImports:
    """A meta-path finder that refuses scipy to numba's own imports while numba loads, and pandas
    to imports that compiled library code makes on the daemon's behalf."""

    def find_spec(self, name: str, path: object = None, target: object = None
                  ) -> ModuleSpec | None:
        if _is(name, "scipy"):
            if not _numba_is_loading_blas():
                return None  # inert: numba is loaded, scipy imports as usual
            if _is(_module(_asker(sys._getframe(1))), "numba"):
                raise ModuleNotFoundError(f"{name} withheld from numba while it loads "
                                          "(himari.daemon.startup)", name=name)
        elif _is(name, "pandas") and _implicit_from_daemon(_asker(sys._getframe(1))):
            raise ModuleNotFoundError(f"{name} withheld from an implicit import by a library "
                                      "called from the daemon (himari.daemon.startup)", name=name)
        return None


def install() -> bool:
    """Put the finder first on sys.meta_path (once). False when it cannot help: numba's array
    support is already loaded, or scipy or pandas is already imported."""
    if any(isinstance(f, LeanImports) for f in sys.meta_path):
        return True
    if not _numba_is_loading_blas() or "scipy" in sys.modules or "pandas" in sys.modules:
        return False
    sys.meta_path.insert(0, LeanImports())
    return True
