"""The default mappings and their JSON Schema, shipped in the package.

``connector/mappings_default/`` holds ``salesforce.yaml``, ``dynamics.yaml`` and
``mapping.schema.json`` (the repository's ``mappings/`` files, linked into the package
and copied into the wheel). ``connector mappings init`` writes a default next to a
fresh schema, with a first line that points editors at that schema file: its absolute
path, or ``./mapping.schema.json`` for a folder that moves (a container image, a
repository). No URL: editors find the schema with no network.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path

from connector.errors import ConfigError
from connector.mapping.schema import MappingFile

KINDS = ("salesforce", "dynamics")
SCHEMA_NAME = "mapping.schema.json"
MODELINE = "# yaml-language-server: $schema="


def default_text(kind: str) -> str:
    """The shipped default mapping for ``kind`` (salesforce or dynamics)."""
    if kind not in KINDS:
        raise ConfigError(f"there is no default mapping for {kind!r}; choose one of {KINDS}")
    return (files("connector") / "mappings_default" / f"{kind}.yaml").read_text(encoding="utf-8")


def schema_text() -> str:
    """The JSON Schema of mapping files, as this connector validates them."""
    return json.dumps(MappingFile.model_json_schema(by_alias=True), indent=2) + "\n"


def with_modeline(text: str, schema: str) -> str:
    """``text`` whose first line points editors at ``schema`` (replaced, or added)."""
    lines = text.splitlines(keepends=True)
    line = f"{MODELINE}{schema}\n"
    if lines and lines[0].startswith(MODELINE):
        return line + "".join(lines[1:])
    return line + text


def write_defaults(
    folder: Path, kinds: Sequence[str], *, relative_schema: bool = False, force: bool = False
) -> list[Path]:
    """Write the defaults of ``kinds`` and the schema into ``folder``; the paths written.

    A mapping file that exists is kept (an admin's edits) unless ``force``; the schema
    is always written, so it matches this connector's version.
    """
    texts = {kind: default_text(kind) for kind in kinds}
    targets = [folder / f"{kind}.yaml" for kind in kinds]
    existing = [str(p) for p in targets if p.exists()]
    if existing and not force:
        raise ConfigError(
            f"{', '.join(existing)} exists already; edit it, choose another folder, or pass "
            "--force to overwrite it"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        schema = folder / SCHEMA_NAME
        schema.write_text(schema_text(), encoding="utf-8")
        pointer = f"./{SCHEMA_NAME}" if relative_schema else str(schema.resolve())
        for kind, target in zip(kinds, targets, strict=True):
            target.write_text(with_modeline(texts[kind], pointer), encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write into {folder}: {exc.strerror}") from None
    return [*targets, schema]
