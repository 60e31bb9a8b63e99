"""Project hygiene that a reviewer would otherwise check by hand: no side effects at import, one error
vocabulary, every import declared, bounded decodes in the stream."""

from __future__ import annotations

import ast
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import simplejpeg
import tomllib

from pipeline.errors import SkipError
from pipeline.stream.batch import decode_into

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "pipeline"
# import name -> distribution name, where they differ
DISTRIBUTIONS = {"cv2": "opencv-python-headless", "yaml": "PyYAML", "PIL": "pillow", "sklearn": "scikit-learn"}


def test_importing_the_package_changes_no_global_state():
    """cv2's thread count and webdataset's URL scheme table are the same after importing every module."""
    modules = sorted(".".join(p.relative_to(REPO).with_suffix("").parts) for p in PACKAGE.rglob("*.py"))
    code = ("import cv2, importlib\n"
            "g = importlib.import_module('webdataset.gopen')\n"
            "before = (cv2.getNumThreads(), dict(g.gopen_schemes))\n"
            f"for m in {modules!r}: importlib.import_module(m.removesuffix('.__init__'))\n"
            "print(before == (cv2.getNumThreads(), dict(g.gopen_schemes)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"


def _classes(tree: ast.Module):
    return [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]


def test_every_exception_class_lives_in_errors_and_derives_from_handclr_error():
    from pipeline import errors

    for path in PACKAGE.rglob("*.py"):
        for cls in _classes(ast.parse(path.read_text())):
            bases = {ast.unparse(b) for b in cls.bases}
            if any(b.endswith(("Error", "Exception")) for b in bases) and path.name != "errors.py":
                pytest.fail(f"{path.relative_to(REPO)}: exception class {cls.name} outside pipeline/errors.py")
    for name in dir(errors):
        obj = getattr(errors, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, errors.HandclrError), name


def _third_party_imports() -> set[str]:
    names = set()
    for folder in ("pipeline", "launch", "benchmarks", "tests"):
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    local = {"pipeline", "benchmarks", "tests"}
    return {n for n in names if n not in sys.stdlib_module_names and n not in local}


def test_every_third_party_import_is_declared():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra]
    declared = {d.split(">")[0].split("<")[0].split("=")[0].split("[")[0].strip().lower() for d in declared}
    for name in sorted(_third_party_imports()):
        assert DISTRIBUTIONS.get(name, name).lower() in declared, f"{name} is imported but not declared"


def test_a_forged_jpeg_header_is_refused_before_decoding():
    """A 16x16 JPEG whose frame header claims 30000x30000: refused from the header, not after a huge decode."""
    data = bytearray(simplejpeg.encode_jpeg(np.zeros((16, 16, 3), np.uint8)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = (30000).to_bytes(2, "big") * 2
    dst = np.empty((256, 256, 3), np.uint8)
    start = time.perf_counter()
    with pytest.raises(SkipError, match=r"header says \(30000, 30000\)"):
        decode_into(memoryview(bytes(data)), (16, 16), dst, (0, 0), 0)
    assert time.perf_counter() - start < 1.0


def test_every_shipped_recipe_and_config_loads():
    """Typed loading checks every key and value of the shipped sharding recipes and training configs."""
    from pipeline.sharding.recipe import load_recipe
    from pipeline.train.config import load_config

    repo = Path(__file__).resolve().parents[1]
    recipes = sorted((repo / "shards").glob("*.yaml"))
    configs = sorted((repo / "launch" / "configs").glob("*.yaml"))
    assert len(recipes) >= 6 and len(configs) >= 12
    for path in recipes:
        assert load_recipe(path).sources, path
    for path in configs:
        assert load_config(path).data.datasets, path
