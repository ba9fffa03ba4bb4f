"""`plugins check`: what installing a pack's requirements.txt would change here. Installs nothing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROTECTED = {
    "torch": "the engine's torch build (a different one may lose the GPU build or break every node)",
    "torchvision": "pulls in its own torch build; the engine does not use torchvision",
    "torchaudio": "pulls in its own torch build",
    "numpy": "every image node uses numpy; another major version breaks compiled packages",
    "diffusers": "the engine pins diffusers", "transformers": "the engine pins transformers",
    "safetensors": "model loading", "aiohttp": "the server", "pillow": "image files",
    "xformers": "built against one exact torch version",
}


@dataclass(frozen=True, kw_only=True)
class RequirementCheck:
    line: str
    name: str | None
    installed: str | None
    action: str  # "ok" | "install" | "change" | "skip" (marker excludes it) | "unknown"
    flagged: bool = False
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"line": self.line, "name": self.name, "installed": self.installed, "action": self.action,
                "flagged": self.flagged, "note": self.note}


def _installed_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def check_requirements(path: Path) -> list[RequirementCheck]:
    """What installing a pack's requirements.txt would change here. Installs nothing."""
    try:
        from packaging.requirements import InvalidRequirement, Requirement
        from packaging.utils import canonicalize_name
    except ImportError:  # packaging is almost always present (pip, transformers need it)
        Requirement = None  # type: ignore[assignment,misc]
    req_file = path / "requirements.txt" if path.is_dir() else path.with_name("requirements.txt")
    if not req_file.is_file():
        return []
    checks: list[RequirementCheck] = []
    for raw in req_file.read_text(encoding="utf-8", errors="replace").splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            checks.append(RequirementCheck(line=line, name=None, installed=None, action="unknown",
                                           note="pip option or nested file; not checked"))
            continue
        if Requirement is None:
            checks.append(RequirementCheck(line=line, name=None, installed=None, action="unknown",
                                           note="install 'packaging' to check versions"))
            continue
        try:
            req = Requirement(line)
        except InvalidRequirement:
            checks.append(RequirementCheck(line=line, name=None, installed=None, action="unknown",
                                           note="not a requirement pip understands the same way everywhere"))
            continue
        name = canonicalize_name(req.name)
        installed = _installed_version(req.name)
        why = PROTECTED.get(name, "")
        if req.marker is not None and not req.marker.evaluate():
            checks.append(RequirementCheck(line=line, name=name, installed=installed, action="skip",
                                           note="not for this platform or Python"))
            continue
        if req.url:
            action = "install" if installed is None else "change"
            note = f"from {req.url}"
        elif installed is None:
            action, note = "install", f"not installed; pip would install {req.specifier or 'the latest'}"
        elif req.specifier and not req.specifier.contains(installed, prereleases=True):
            action, note = "change", f"installed {installed} does not satisfy {req.specifier}; pip would replace it"
        else:
            action, note = "ok", f"installed {installed} satisfies it"
        flagged = bool(why) and action in ("install", "change")
        if flagged:
            note += f" — PROTECTED: {why}"
        checks.append(RequirementCheck(line=line, name=name, installed=installed, action=action, flagged=flagged,
                                       note=note))
    return checks
