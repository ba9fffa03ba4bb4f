"""Which editor the server serves at /: ours (the default), or another frontend's static files.

ComfyUI's own editor ships as the pip package `comfyui-frontend-package` (an optional extra of this
project, never vendored); `--frontend comfyui` finds it, `--front-end-root DIR` serves any folder.
The versions reported here also go into /system_stats, which ComfyUI's editor reads to decide whether
to warn about an outdated frontend or template pack.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FRONTENDS = ("sumie", "comfyui")
FRONTEND_PACKAGE = "comfyui-frontend-package"
FRONTEND_MODULE = "comfyui_frontend_package"
TEMPLATES_PACKAGE = "comfyui-workflow-templates"
EMBEDDED_DOCS_PACKAGE = "comfyui-embedded-docs"


class FrontendError(ValueError):
    """A frontend that cannot be served, with what to do about it."""


def package_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def comfyui_frontend_root() -> Path | None:
    """The static folder of the installed `comfyui-frontend-package`, or None when it is not installed."""
    spec = importlib.util.find_spec(FRONTEND_MODULE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        static = Path(location) / "static"
        if (static / "index.html").is_file():
            return static
    return None


def resolve_web_root(*, frontend: str = "sumie", front_end_root: str | Path | None = None) -> Path | None:
    """The folder to serve at /, or None for our own editor (the app's default web root)."""
    if front_end_root is not None:
        root = Path(front_end_root).expanduser().resolve()
        if not (root / "index.html").is_file():
            raise FrontendError(f"--front-end-root {root}: no index.html there (point it at a built frontend's "
                                "folder, the one holding index.html)")
        return root
    if frontend == "sumie":
        return None
    if frontend == "comfyui":
        root = comfyui_frontend_root()
        if root is None:
            raise FrontendError(f"--frontend comfyui needs the {FRONTEND_PACKAGE} package: "
                                f"pip install '{FRONTEND_PACKAGE}' (or: pip install -e '.[comfyui-frontend]')")
        return root
    raise FrontendError(f"unknown frontend {frontend!r}; choose one of {', '.join(FRONTENDS)}")


@dataclass(frozen=True, kw_only=True)
class Versions:
    """Versions of the optional ComfyUI packages, as /system_stats reports them."""

    frontend: str | None
    templates: str | None

    @classmethod
    def installed(cls) -> Versions:
        return cls(frontend=package_version(FRONTEND_PACKAGE), templates=package_version(TEMPLATES_PACKAGE))

    def system_fields(self) -> dict[str, Any]:
        """The /system_stats fields ComfyUI's editor reads. The required versions are the installed
        ones: this server pins no version, so the editor never shows an 'outdated' banner for them."""
        packages = [{"name": name, "installed": version, "required": version}
                    for name, version in ((FRONTEND_PACKAGE, self.frontend), (TEMPLATES_PACKAGE, self.templates))
                    if version is not None]
        fields: dict[str, Any] = {"comfy_package_versions": packages, "deploy_environment": "local"}
        if self.frontend is not None:
            fields["comfyui_frontend_version"] = self.frontend
            fields["required_frontend_version"] = self.frontend
        if self.templates is not None:
            fields["installed_templates_version"] = self.templates
            fields["required_templates_version"] = self.templates
            fields["workflow_templates_version"] = self.templates
        return fields
