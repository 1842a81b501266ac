"""Files medvlm reads from its own checkout and package: the shipped recipes and the general base model.

The general base (``general_base/``) is the tiny "general LLaVA" the demo starts from, as a real user
starts from released general LLaVA weights. It is built by ``python -m medvlm.runs.general_base``
from ``recipes/demo/general_base.yaml`` and shipped as package data with a ``SHA256SUMS`` manifest
(``sha256sum -c`` format), which is checked before the model is used: a truncated or edited file
would otherwise surface as a confusing load error or, worse, as a quietly different demo result.
"""

from __future__ import annotations

from pathlib import Path

from medvlm.errors import ModelError
from medvlm.io import sha256_file, write_text

MANIFEST = "SHA256SUMS"
RESOURCES = Path(__file__).resolve().parent
GENERAL_BASE = RESOURCES / "general_base"


def recipes_dir() -> Path:
    """The repository's ``recipes/`` directory (medvlm is installed from its checkout)."""
    return RESOURCES.parent.parent / "recipes"


def write_manifest(directory: str | Path) -> dict[str, str]:
    """Write ``directory/SHA256SUMS`` over every other file in it (sorted); returns name → digest."""
    directory = Path(directory)
    sums = {path.relative_to(directory).as_posix(): sha256_file(path)
            for path in sorted(directory.rglob("*")) if path.is_file() and path.name != MANIFEST}
    write_text(directory / MANIFEST, "".join(f"{digest}  {name}\n" for name, digest in sums.items()))
    return sums


def read_manifest(directory: str | Path) -> dict[str, str]:
    """The name → sha256 entries of ``directory/SHA256SUMS``."""
    path = Path(directory) / MANIFEST
    sums: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or not name:
            raise ModelError(f"{path}: line {number} is not '<sha256>  <file>'")
        sums[name] = digest
    return sums


def verify_manifest(directory: str | Path, what: str) -> Path:
    """Check every file ``directory/SHA256SUMS`` lists; a missing manifest or file, or a wrong digest, is an error."""
    directory = Path(directory)
    remedy = ("restore it (reinstall medvlm, or `git checkout -- medvlm/resources` in a checkout), or build "
              "it from scratch (`medvlm demo --from-scratch`, or `python -m medvlm.runs.general_base`)")
    if not (directory / MANIFEST).is_file():
        raise ModelError(f"{directory}: {what} is missing (no {MANIFEST}); {remedy}")
    problems = []
    for name, digest in read_manifest(directory).items():
        path = directory / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif (found := sha256_file(path)) != digest:
            problems.append(f"{name} has sha256 {found[:12]}…, the manifest says {digest[:12]}…")
    if problems:
        raise ModelError(f"{directory}: {what} is corrupt ({'; '.join(problems)}); {remedy}")
    return directory


def general_base() -> Path:
    """The shipped general base model directory, checked against its manifest."""
    return verify_manifest(GENERAL_BASE, "the shipped general base model")
