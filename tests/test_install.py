"""charrnn installed from its wheel, not from the checkout: the package carries its data (the corpus
catalogue, the page template) and every command works from a directory outside the repository.

The wheel is built from a copy of the sources (the checkout gets no build/ or egg-info) with no
network and no build isolation, then installed, non-editable and without dependencies, into a
fresh virtual environment by the running pip (`pip --python`). That environment sees the running
interpreter's site-packages (torch, typer, ...) through a .pth line, after its own site-packages:
a path line is not scanned for further .pth files, so the checkout's editable finder is not loaded,
and the wheel's charrnn is the one imported (the test checks where it comes from).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import REPO, TINY_TEXT, mirror

from charrnn import __version__ as charrnn_version

pytestmark = pytest.mark.slow

TINY = ["--hidden", "16", "--embed", "8", "--layers", "1", "--seq-len", "16", "--batch-size", "4", "--steps", "2"]


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 120) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(map(str, args))} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def _needs_a_build_backend_and_pip() -> None:
    """Building offline needs setuptools here (the test extra installs it), and `pip --python` pip >= 22.3."""
    for name in ("pip", "setuptools"):  # found, not imported: importing both trips setuptools' distutils shim
        if importlib.util.find_spec(name) is None:
            pytest.skip(f"cannot build a wheel offline here: {name} is not installed (pip install 'charrnn[test]')")
    pip_version = importlib.metadata.version("pip")
    if tuple(int(n) for n in re.findall(r"\d+", pip_version)[:2]) < (22, 3):
        pytest.skip(f"pip {pip_version} cannot install into another environment (--python needs pip >= 22.3)")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """A fresh virtual environment holding charrnn from its wheel; returns paths and a clean env."""
    _needs_a_build_backend_and_pip()
    root = tmp_path_factory.mktemp("install")
    source = root / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "charrnn", source / "charrnn", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    pip_env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    pip = [sys.executable, "-m", "pip", "--no-cache-dir"]
    quiet = ["--quiet", "--no-index", "--no-deps"]
    _run([*pip, "wheel", *quiet, "--no-build-isolation", "--wheel-dir", str(root / "dist"), str(source)], root, pip_env)
    (wheel,) = (root / "dist").glob("charrnn-*.whl")
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], root)
    python = venv / "bin" / "python"
    _run([*pip, "--python", str(python), "install", *quiet, str(wheel)], root, pip_env)
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], root).strip()
    Path(purelib, "shared-dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    work = root / "elsewhere"  # outside the repository: nothing of the checkout is found from here
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CHARRNN_CORPORA", "CHARRNN_MIRROR")}
    env.update(CHARRNN_CACHE=str(root / "cache"), COLUMNS="200", PYTHONNOUSERSITE="1")
    return {
        "wheel": wheel,
        "venv": venv,
        "python": python,
        "charrnn": venv / "bin" / "charrnn",
        "work": work,
        "env": env,
    }


def test_the_installed_package_is_the_wheels_and_carries_its_data(installed):
    where = _run(
        [
            str(installed["python"]),
            "-c",
            "import charrnn, importlib.resources as r; print(charrnn.__file__); "
            "print(all(r.files('charrnn').joinpath(f).is_file() for f in ('data/catalogue.json', 'visualize_page.html', "
            "'serve/page.html', 'serve/static/app.js', 'serve/static/vendor/abcjs/abcjs-basic-min.js', "
            "'serve/static/vendor/abcjs/LICENSE')))",
        ],
        installed["work"],
        installed["env"],
    ).split()
    assert Path(where[0]).is_relative_to(installed["venv"]), where[0]
    assert where[1] == "True"
    # `export --format web` writes onnxruntime-web from the package: a wheel built without
    # `make vendor` (the wasm is fetched from npm, not kept in git) could not.
    with zipfile.ZipFile(installed["wheel"]) as wheel:
        names = set(wheel.namelist())
    runtime = "charrnn/export/vendor/onnxruntime-web/"
    for name in ("ort-wasm-simd-threaded.wasm", "ort.wasm.bundle.min.mjs", "LICENSE"):
        assert runtime + name in names, f"the wheel lacks {runtime + name}: run `make vendor` before building it"
    assert "charrnn/export/page.html" in names
    print(f"\nwheel {installed['wheel'].name} installed in {installed['venv']}; charrnn imported from {where[0]}")


def test_commands_work_from_outside_the_repository(installed):
    charrnn, work, env = str(installed["charrnn"]), installed["work"], installed["env"]
    (work / "tiny.txt").write_text(TINY_TEXT)
    transcript = []
    for args in (
        ["--version"],
        ["corpus", "list"],
        ["train", "tiny.txt", *TINY, "--out", "run", "--device", "cpu"],
        ["sample", "run", "--length", "40", "--seed", "1"],
        ["info", "run"],
        ["export", "run", "--format", "web", "--out", "site"],
    ):
        output = _run([charrnn, *args], work, env)
        transcript.append(f"$ charrnn {' '.join(args)}\n{output.rstrip()}")
        if args[0] == "corpus":
            assert "tinyshakespeare" in output and "python-stdlib" in output
    assert transcript[0].endswith(f"charrnn {charrnn_version}")
    assert (work / "run" / "best.safetensors").is_file()
    assert (work / "site" / "ort" / "ort-wasm-simd-threaded.wasm").is_file() and (
        work / "site" / "index.html"
    ).is_file()
    print("\n" + "\n".join(transcript))


def test_a_ready_corpus_comes_from_the_mirror_into_the_working_directory(installed):
    found = mirror()
    if found is None:
        pytest.skip("no corpus mirror: set CHARRNN_MIRROR to a directory holding tinyshakespeare.txt")
    charrnn, work = str(installed["charrnn"]), installed["work"]
    env = {**installed["env"], "CHARRNN_MIRROR": str(found)}
    output = _run([charrnn, "corpus", "get", "tinyshakespeare"], work, env)
    assert (work / "corpora" / "tinyshakespeare.txt").stat().st_size == 1115394
    print(f"\n$ charrnn corpus get tinyshakespeare\n{output.rstrip()}")
