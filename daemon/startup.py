"""Start-up cost of the daemon's commands: keep numba from importing scipy while numba loads.

Why: when scipy is installed (it arrives with the training extras), numba imports it twice while
it loads: `numba/__init__` imports `scipy` for a version check, and `numba.np.arraymath` (imported
when the first kernel is compiled or loaded from cache) calls `ensure_blas()`, which imports
`scipy.linalg.cython_blas` and with it all of `scipy.linalg`: about 0.35 s of a 0.5 s
`import numba` on an idle machine, for a replay that never calls BLAS.

What the hook changes: while `numba.np.arraymath` has not finished importing, an import of scipy
*made by numba's own code* fails, so numba records `_HAVE_BLAS = False`. That flag only decides
how `np.correlate` / `np.convolve` are compiled inside njit (a plain loop instead of `np.dot`);
no run-time kernel uses them (nor np.dot / np.linalg: checked by tests/core/test_startup.py over
every module that defines an njit kernel). Once arraymath is loaded the hook is inert: `np.dot`
in a kernel compiled later still imports scipy.linalg as usual (`ensure_blas` at typing time, the
BLAS pointers at call time), and imports of scipy by anything other than numba are never touched.

`install()` is called by the command line for the daemon's commands only (`himari train` and
`himari evaluate` keep the default behaviour).
"""

from __future__ import annotations

import sys
from importlib.machinery import ModuleSpec
from types import FrameType

_BOOTSTRAP = "<frozen importlib"


def _numba_is_loading_blas() -> bool:
    """True until numba.np.arraymath has run its BLAS check."""
    arraymath = sys.modules.get("numba.np.arraymath")
    return arraymath is None or not hasattr(arraymath, "_HAVE_BLAS")


def _importer(frame: FrameType | None) -> str:
    """The module name of the first frame outside the import machinery (who asked)."""
    while frame is not None and frame.f_code.co_filename.startswith(_BOOTSTRAP):
        frame = frame.f_back
    return "" if frame is None else str(frame.f_globals.get("__name__", ""))


class NumbaWithoutScipy:
    """A meta-path finder that refuses scipy to numba's own imports while numba loads."""

    def find_spec(self, name: str, path: object = None, target: object = None
                  ) -> ModuleSpec | None:
        if name != "scipy" and not name.startswith("scipy."):
            return None
        if not _numba_is_loading_blas():
            return None  # inert: numba is loaded, scipy imports as usual
        who = _importer(sys._getframe(1))
        if who == "numba" or who.startswith("numba."):
            raise ModuleNotFoundError(f"{name} withheld from numba while it loads "
                                      "(himari.daemon.startup)", name=name)
        return None


def install() -> bool:
    """Put the finder first on sys.meta_path (once). False when it cannot help: numba's array
    support is already loaded, or scipy is already imported."""
    if any(isinstance(f, NumbaWithoutScipy) for f in sys.meta_path):
        return True
    if not _numba_is_loading_blas() or "scipy" in sys.modules:
        return False
    sys.meta_path.insert(0, NumbaWithoutScipy())
    return True
