"""Start-up cost, checked by what a command imports (fresh subprocesses), never by timing.

A command pays for every module it imports; these tests pin what the daemon's commands must not
import: `himari version` nothing heavy, a config load no matrix kernel, a replay with matrices off no
matrix kernel, no scipy (numba's BLAS probe, see daemon/startup.py), no pandas (pyarrow's probe),
no uvloop (a simulated replay does no I/O), and a replay from the data catalog no pyarrow.dataset.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MATRIX_KERNELS = {f"himari.daemon.matrices.{m}" for m in
                  ("strategic", "tactical", "mlmi", "mmd", "nwrqk", "lvn", "fvg", "volatility",
                   "stage")}
QUIET = ["--quiet", "--set", "strategy.name=\"ema_cross\"", "--set", "strategy.params.bar_spec=\"20t\"",
         "--set", "replay.progress=false", "--set", "log.level=\"warning\""]
SMALL_REPLAY = [*QUIET, "--set", "feed.synthetic.n_ticks=3000"]


def modules_after(code: str, tmp: Path) -> set[str]:
    """Run `code` in a fresh interpreter; the names in sys.modules at its end."""
    script = code + "\nimport sys, json\nprint('MODULES=' + json.dumps(sorted(sys.modules)))\n"
    env = dict(os.environ, HIMARI_CATALOG_DIR=str(tmp / "catalog"))
    env.pop("PYTHONPATH", None)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                         cwd=str(tmp), timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    line = next(x for x in res.stdout.splitlines() if x.startswith("MODULES="))
    return set(json.loads(line[len("MODULES="):]))


def _installed(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def cli(args: list[str]) -> str:
    """Code that runs `himari ARGS` in-process and fails on a non-zero exit."""
    return ("from himari.daemon.cli import main\n"
            f"rc = main({args!r})\n"
            "assert rc == 0, rc\n")


def test_version_imports_nothing_heavy(tmp_path: Path) -> None:
    mods = modules_after(cli(["version"]), tmp_path)
    for heavy in ("numba", "numpy", "pyarrow", "structlog", "msgspec", "scipy", "asyncio"):
        assert heavy not in mods, heavy


def test_config_load_imports_no_matrix_kernels(tmp_path: Path) -> None:
    mods = modules_after("from himari.daemon.config import load_config\n"
                         "cfg = load_config(None, ['matrices.enabled=true'])\n"
                         "assert cfg.matrices.strategic.rows == 48\n", tmp_path)
    assert "himari.daemon.matrices.config" in mods
    assert not MATRIX_KERNELS & mods


def test_replay_with_matrices_off_loads_no_matrix_kernel_scipy_or_uvloop(tmp_path: Path) -> None:
    off = modules_after(cli(["replay", "--out", str(tmp_path / "off"), *SMALL_REPLAY,
                             "--set", "matrices.enabled=false"]), tmp_path)
    assert "numba" in off and "himari.daemon.bars" in off  # it did run the kernels
    assert not MATRIX_KERNELS & off, sorted(MATRIX_KERNELS & off)
    assert not {m for m in off if m == "scipy" or m.startswith("scipy.")}
    assert "uvloop" not in off
    # the same replay with the matrices on does load them: the check above can fail
    on = modules_after(cli(["replay", "--out", str(tmp_path / "on"), *SMALL_REPLAY,
                            "--set", "matrices.enabled=true"]), tmp_path)
    assert {"himari.daemon.matrices.strategic", "himari.daemon.matrices.stage"} <= on


def test_catalog_replay_reads_parquet_without_pyarrow_dataset_nor_pandas(tmp_path: Path) -> None:
    csv = tmp_path / "ticks.csv"
    rows = [f"{1_704_067_200_000_000_000 + 1_000_000 * i},{100 + (i % 7) * 0.25:.2f},{1 + i % 3},"
            f"{'BS'[i % 2]}" for i in range(2000)]
    csv.write_text("ts_ns,price,size,side\n" + "\n".join(rows) + "\n")
    args = ["replay", str(csv), *QUIET]
    first = modules_after(cli([*args, "--out", str(tmp_path / "a")]), tmp_path)  # parse, store
    second = modules_after(cli([*args, "--out", str(tmp_path / "b")]), tmp_path)
    inputs = json.loads((tmp_path / "b" / "report.json").read_text())["inputs"]
    assert [i["catalog"] for i in inputs] == ["read"]  # the Parquet copy, not a second parse
    assert "pyarrow.parquet" in second
    assert "pyarrow.dataset" not in second
    for mods in (first, second):  # pyarrow's implicit pandas probe is withheld
        assert "pandas" not in mods
    # the same replay in a process where pandas was imported first (the hook then stands aside)
    # gives byte-identical fills: withholding pandas changes no conversion
    with_pandas = modules_after("import pandas\n" + cli([*args, "--out", str(tmp_path / "c")]),
                                tmp_path) if _installed("pandas") else set()
    if with_pandas:
        assert "pandas" in with_pandas
        assert ((tmp_path / "c" / "fills.csv").read_bytes()
                == (tmp_path / "a" / "fills.csv").read_bytes()
                == (tmp_path / "b" / "fills.csv").read_bytes())


def test_numba_loads_without_scipy_yet_blas_kernels_still_work(tmp_path: Path) -> None:
    pytest.importorskip("scipy")
    code = ("import sys\n"
            "from himari.daemon import startup\n"
            "assert startup.install()\n"
            "import numba, numba.np.arraymath\n"
            "assert not any(m == 'scipy' or m.startswith('scipy.') for m in sys.modules)\n"
            "assert numba.np.arraymath._HAVE_BLAS is False\n"
            "import numpy as np\n"
            "@numba.njit\n"
            "def dot(a, b):\n"
            "    return np.dot(a, b)\n"
            "a = np.arange(6.0).reshape(2, 3); b = np.arange(3.0)\n"
            "assert np.allclose(dot(a, b), a @ b)\n"  # np.dot compiles once numba is loaded
            "assert 'scipy.linalg.cython_blas' in sys.modules\n")
    modules_after(code, tmp_path)


def test_hook_never_withholds_scipy_from_other_importers(tmp_path: Path) -> None:
    pytest.importorskip("scipy")
    mods = modules_after("from himari.daemon import startup\n"
                         "assert startup.install()\n"
                         "import scipy.linalg\n"  # not numba asking: imported as usual
                         "import numba\n", tmp_path)
    assert "scipy.linalg" in mods


_BLAS_NAMES = {"dot", "vdot", "inner", "outer", "matmul", "correlate", "convolve", "linalg",
               "kron", "cov", "corrcoef", "tensordot", "einsum"}


def _is_jit(dec: ast.expr) -> bool:
    target = dec.func if isinstance(dec, ast.Call) else dec
    name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
    return name in {"njit", "jit", "vectorize", "guvectorize", "cfunc", "register_jitable"}


def test_no_run_time_kernel_calls_blas() -> None:
    """Why withholding scipy from numba's start-up is safe: it only changes how np.correlate /
    np.convolve compile inside njit, and no kernel uses them (nor any BLAS/LAPACK routine)."""
    offenders = []
    kernels = 0
    for folder in ("daemon", "decision", "strategies", "brokers"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for fn in ast.walk(tree):
                if not isinstance(fn, ast.FunctionDef) or not any(map(_is_jit, fn.decorator_list)):
                    continue
                kernels += 1
                for node in ast.walk(fn):
                    if isinstance(node, ast.Attribute) and node.attr in _BLAS_NAMES:
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {fn.name}: .{node.attr}")
                    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult):
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {fn.name}: @")
    assert kernels > 20  # the walk found the kernels
    assert not offenders, offenders


def test_hook_withholds_only_implicit_pandas_imports(tmp_path: Path) -> None:
    if not _installed("pandas"):
        pytest.skip("pandas not installed")
    body = ("import sys\n"
            "import numpy as np, pyarrow as pa\n"
            "a = pa.array(np.arange(3))\n"  # pyarrow's implicit pandas probe: withheld
            "assert 'pandas' not in sys.modules\n"
            "assert a.to_numpy().tolist() == [0, 1, 2]\n"
            "import pandas\n"  # an import statement, even in daemon code: always allowed
            "assert pa.table({'x': a}).to_pandas()['x'].tolist() == [0, 1, 2]\n")
    code = ("from himari.daemon import startup\n"
            "assert startup.install()\n"
            f"exec({body!r}, {{'__name__': 'himari.daemon.example'}})\n")  # runs as daemon code
    assert "pandas" in modules_after(code, tmp_path)


def test_daemon_code_never_asks_pyarrow_for_pandas() -> None:
    """Why withholding pyarrow's implicit pandas import is safe: no run-time module converts to or
    from pandas (it would then need the import the hook refuses)."""
    hits = []
    for folder in ("daemon", "decision", "strategies", "brokers"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.name == "startup.py":  # the hook's own docstring
                continue
            text = path.read_text()
            for word in ("to_pandas", "from_pandas", "import pandas", "from pandas"):
                if word in text:
                    hits.append(f"{path.relative_to(ROOT)}: {word}")
    assert not hits, hits
