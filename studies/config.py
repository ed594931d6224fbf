"""Loading a study's configuration from a preset name or a TOML file."""

from __future__ import annotations

import os
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from spanmix.search import StudyConfig
from spanmix.space import ConfigError


def preset_names() -> list[str]:
    return sorted(p.name.removesuffix(".toml") for p in resources.files("spanmix.studies.presets").iterdir() if p.name.endswith(".toml"))


def _read(text: str, origin: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{origin}: not valid TOML: {err}") from None


def _anchor_paths(data: dict[str, Any], folder: Path) -> None:
    """Make ``[data] files`` and ``tokenizer`` and ``[base] model`` relative to the config file's
    folder, not to wherever the command runs, and absolute, so a worker started elsewhere reads the
    same files."""

    def anchor(path: Any) -> Any:
        return os.path.normpath((folder / Path(path).expanduser()).absolute()) if isinstance(path, str) and path else path

    base = data.get("base")
    if isinstance(base, dict) and "model" in base:
        base["model"] = anchor(base["model"])
    section = data.get("data")
    if not isinstance(section, dict):
        return  # its shape is reported by the section's validation
    if isinstance(section.get("files"), list):
        section["files"] = [anchor(p) for p in section["files"]]
    if "tokenizer" in section:
        section["tokenizer"] = anchor(section["tokenizer"])


def load_config(preset: str | None = None, path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> StudyConfig:
    """A validated :class:`StudyConfig` from a preset or a TOML file, with ``study`` keys overridden
    (for example the name); every error names the file, section and key."""
    if (preset is None) == (path is None):
        raise ConfigError("give either a preset or a config file")
    if preset is not None:
        if preset not in preset_names():
            raise ConfigError(f"preset {preset!r} is unknown; allowed: {', '.join(preset_names())}")
        origin = f"preset {preset!r}"
        data = _read(resources.files("spanmix.studies.presets").joinpath(f"{preset}.toml").read_text(), origin)
    else:
        origin = str(path)
        try:
            data = _read(Path(path).read_text(), origin)  # type: ignore[arg-type]
        except OSError as err:
            raise ConfigError(f"config file {origin}: {err.strerror}") from None
        _anchor_paths(data, Path(path).parent)  # type: ignore[arg-type]
    study = data.get("study", {})
    if isinstance(study, dict):  # a [study] of the wrong shape is reported by from_dict
        data["study"] = {**study, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    try:
        return StudyConfig.from_user(data)
    except ConfigError as err:
        raise ConfigError(f"{origin}: {err}") from None
