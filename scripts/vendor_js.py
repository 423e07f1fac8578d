#!/usr/bin/env python3
"""Refresh the JavaScript libraries shipped inside the charrnn package from their npm packages.

Pages charrnn writes work offline and load no remote script, so each library is a pinned npm
package whose needed files are copied into the Python package with its license. To add a library,
or move one to a new version, edit PACKAGES (name, version, the tarball's integrity from
`npm view NAME@VERSION dist.integrity`, the files to keep) and run:

    python scripts/vendor_js.py            # every package
    python scripts/vendor_js.py onnxruntime-web

It needs `npm` (used only for `npm pack`, which downloads the tarball) and network access to the
npm registry; the tarball's sha512 must match the pinned integrity, or nothing is written.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class NpmPackage:
    name: str
    version: str
    integrity: str  # "sha512-<base64>", as npm reports it
    dest: str  # folder relative to the repository root; replaced as a whole
    files: dict[str, str]  # path inside the tarball (under package/) -> file name in dest
    # Used when the tarball carries no LICENSE file (onnxruntime-web's does not): the upstream text.
    license_fallback: str | None = None
    license_candidates: tuple[str, ...] = field(default=("LICENSE", "LICENSE.md", "LICENSE.txt", "license"))


PACKAGES = [
    # The wasm build of ONNX Runtime, for `charrnn export --format web`. Only the single-file ES module
    # bundle (its wasm loader inside) and the plain SIMD wasm: the smallest build that runs the model
    # (the jsep/jspi/asyncify variants are 16-28 MB and add WebGPU/JSPI support the page does not use).
    NpmPackage(
        name="onnxruntime-web",
        version="1.30.0",
        integrity="sha512-q0y+JrrtukXSzsBWEMccVfqX25LRmosXHF+CaRJmg8pZClzcV7svNc4rKY3jL02Vb7QmRMDs1SigqR4CXAfKYQ==",
        dest="charrnn/export/vendor/onnxruntime-web",
        files={
            "dist/ort.wasm.bundle.min.mjs": "ort.wasm.bundle.min.mjs",
            "dist/ort-wasm-simd-threaded.wasm": "ort-wasm-simd-threaded.wasm",
        },
        license_fallback="scripts/licenses/onnxruntime-web.LICENSE",
    ),
    # abcjs, for `charrnn serve`: draws ABC tunes as SVG and plays them. The basic build only (no editor
    # plugin); its .LICENSE file holds the licenses of the code bundled into the minified file.
    NpmPackage(
        name="abcjs",
        version="6.7.2",
        integrity="sha512-cHCyf8j0hAcxTuwZ9l2QznaSlLK1TD2s5oVw6Ig8Kfss6VfJKoNJ1kAzMBwa6DDWeyNl2JH7mN/U+MJ8MYbC5g==",
        dest="charrnn/serve/static/vendor/abcjs",
        files={
            "dist/abcjs-basic-min.js": "abcjs-basic-min.js",
            "dist/abcjs-basic-min.js.LICENSE": "abcjs-basic-min.js.LICENSE",
        },
    ),
]


def fetch_tarball(pkg: NpmPackage, workdir: Path) -> Path:
    done = subprocess.run(
        ["npm", "pack", f"{pkg.name}@{pkg.version}", "--pack-destination", str(workdir), "--silent"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"npm pack {pkg.name}@{pkg.version} failed: {done.stderr.strip().splitlines()[-1:]}")
    tarball = workdir / done.stdout.strip().splitlines()[-1]
    algo, _, expected = pkg.integrity.partition("-")
    actual = base64.b64encode(hashlib.new(algo, tarball.read_bytes()).digest()).decode()
    if actual != expected:
        raise SystemExit(f"{pkg.name}@{pkg.version}: tarball integrity {algo}-{actual} != pinned {pkg.integrity}")
    return tarball


def vendor(pkg: NpmPackage) -> None:
    dest = REPO / pkg.dest
    with tempfile.TemporaryDirectory() as tmp:
        tarball = fetch_tarball(pkg, Path(tmp))
        staged = Path(tmp) / "staged"
        staged.mkdir()
        with tarfile.open(tarball) as tar:
            # Read named members only (never extractall): a tarball cannot write outside `staged`.
            for inner, name in pkg.files.items():
                staged.joinpath(name).write_bytes(_member(tar, inner, pkg))
            license_text = next(
                (_member(tar, c, pkg) for c in pkg.license_candidates if _has(tar, c)),
                None,
            )
        if license_text is None:
            if pkg.license_fallback is None:
                raise SystemExit(f"{pkg.name}@{pkg.version} has no LICENSE file and no fallback is given")
            license_text = (REPO / pkg.license_fallback).read_bytes()
        staged.joinpath("LICENSE").write_bytes(license_text)
        staged.joinpath("SOURCE.txt").write_text(
            f"{pkg.name}@{pkg.version} from the npm registry ({pkg.integrity}),\n"
            f"refreshed by scripts/vendor_js.py; do not edit these files by hand.\n",
            encoding="utf-8",
        )
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(staged, dest)
    total = sum(p.stat().st_size for p in dest.iterdir())
    print(f"{pkg.name}@{pkg.version} -> {pkg.dest} ({total / 1e6:.1f} MB)")


def _has(tar: tarfile.TarFile, inner: str) -> bool:
    try:
        tar.getmember(f"package/{inner}")
        return True
    except KeyError:
        return False


def _member(tar: tarfile.TarFile, inner: str, pkg: NpmPackage) -> bytes:
    try:
        handle = tar.extractfile(f"package/{inner}")
    except KeyError:
        handle = None
    if handle is None:
        raise SystemExit(f"{pkg.name}@{pkg.version} has no file {inner}")
    return handle.read()


def main(argv: list[str]) -> None:
    wanted = set(argv)
    unknown = wanted - {p.name for p in PACKAGES}
    if unknown:
        raise SystemExit(f"unknown package(s): {', '.join(sorted(unknown))}")
    for pkg in PACKAGES:
        if not wanted or pkg.name in wanted:
            vendor(pkg)


if __name__ == "__main__":
    main(sys.argv[1:])
