"""How Slicer's Python gets KD SAM's code and the packages it needs.

* ``kdsam_core`` / ``kdsam_train``: bundled. The extension build copies both packages next to
  the module (``KDSAMExtension/CMakeLists.txt``), into Slicer's scripted-modules folder, which
  is on ``sys.path``. Running from a source checkout (the module folder added under Slicer's
  Additional module paths), :func:`ensure_code_on_path` adds the repository root and its
  ``training`` folder instead.
* torch and torchvision: Slicer's PyTorch extension (``EXTENSION_DEPENDS PyTorch``), whose
  ``PyTorchUtils`` installs the build that fits the GPU.
* the rest (:data:`PIP_REQUIREMENTS`): pip, into Slicer's Python, on first use, after the user
  agrees in a dialog (the widget; this module only says what is missing).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

# import name -> pip requirement (torch/torchvision come from the PyTorch extension)
PIP_REQUIREMENTS = {
    "safetensors": "safetensors>=0.4",
    "segment_anything": "segment-anything==1.0",
    "scipy": "scipy",
    "skimage": "scikit-image",
    "yaml": "pyyaml",
    "tqdm": "tqdm",
}
TORCH_MODULES = ("torch", "torchvision")


def find_code_root(start: str | os.PathLike) -> Path | None:
    """The nearest folder at or above ``start`` holding ``kdsam_core/__init__.py``."""
    p = Path(start).resolve()
    for d in (p, *p.parents):
        if (d / "kdsam_core" / "__init__.py").is_file():
            return d
    return None


def ensure_code_on_path(module_dir: str | os.PathLike) -> list[str]:
    """Make ``kdsam_core`` (and ``kdsam_train``) importable; returns the folders added to ``sys.path``."""
    added = []
    if importlib.util.find_spec("kdsam_core") is None:
        root = find_code_root(module_dir)
        if root is not None:
            added.append(str(root))
            if (root / "training" / "kdsam_train").is_dir():
                added.append(str(root / "training"))
    for d in added:
        if d not in sys.path:
            sys.path.insert(0, d)
    return added


def code_dirs() -> list[str]:
    """Folders a child process needs on PYTHONPATH to import ``kdsam_core`` and ``kdsam_train``."""
    dirs = []
    for name in ("kdsam_core", "kdsam_train"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin:
            d = str(Path(spec.origin).resolve().parents[1])
            if d not in dirs:
                dirs.append(d)
    return dirs


def missing_packages() -> dict[str, list[str]]:
    """``{"torch": [...], "pip": [...requirements], "code": [...]}`` of what cannot be imported."""
    out = {"torch": [m for m in TORCH_MODULES if importlib.util.find_spec(m) is None],
           "pip": [req for mod, req in PIP_REQUIREMENTS.items() if importlib.util.find_spec(mod) is None],
           "code": [m for m in ("kdsam_core",) if importlib.util.find_spec(m) is None]}
    return out


def describe_missing(missing: dict[str, list[str]]) -> str:
    """A sentence for the install dialog; empty when nothing is missing."""
    parts = []
    if missing.get("torch"):
        parts.append("PyTorch (installed through the PyTorch extension: " + ", ".join(missing["torch"]) + ")")
    if missing.get("pip"):
        parts.append("Python packages from PyPI: " + ", ".join(missing["pip"]))
    if missing.get("code"):
        parts.append("the KD SAM code (kdsam_core) is not found: reinstall the extension")
    return "; ".join(parts)
