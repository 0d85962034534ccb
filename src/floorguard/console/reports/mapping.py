"""The controls mapping: floor control -> floor rules and JIS Q 15001 / Privacy Mark
requirement areas, kept as data (``floorguard/data/controls_mapping.toml``)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from floorguard.events import CONTROLS

MAPPING_FILE = Path(__file__).resolve().parent.parent.parent / "data" / "controls_mapping.toml"
LANGS = ("en", "ja")


class MappingError(ValueError):
    pass


@dataclass(frozen=True)
class ControlMapping:
    control: str
    rules: tuple[str, ...]
    areas: tuple[str, ...]


@dataclass(frozen=True)
class Mapping:
    rules: dict[str, dict[str, str]]
    areas: dict[str, dict[str, str]]
    controls: tuple[ControlMapping, ...]

    def for_lang(self, lang: str) -> list[dict[str, Any]]:
        return [{"control": c.control,
                 "rules": [{"id": r, "text": self.rules[r][lang]} for r in c.rules],
                 "areas": [{"id": a, "text": self.areas[a][lang]} for a in c.areas]}
                for c in self.controls]


def _texts(where: str, table: Any) -> dict[str, dict[str, str]]:
    if not isinstance(table, dict) or not table:
        raise MappingError(f"{where}: expected a table of named entries")
    out: dict[str, dict[str, str]] = {}
    for key, entry in table.items():
        if not isinstance(entry, dict) or set(entry) != set(LANGS) or not all(
                isinstance(v, str) and v.strip() for v in entry.values()):
            raise MappingError(f"{where}.{key}: give exactly the keys en and ja, "
                               "each a non-empty string")
        out[key] = dict(entry)
    return out


def parse_mapping(text: str, source: str = "<mapping>") -> Mapping:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MappingError(f"{source}: {exc}") from None
    unknown = set(data) - {"rules", "areas", "control"}
    if unknown:
        raise MappingError(f"{source}: unknown top-level keys {sorted(unknown)} (known: "
                           "rules, areas, control)")
    rules = _texts(f"{source}: rules", data.get("rules"))
    areas = _texts(f"{source}: areas", data.get("areas"))
    controls = []
    seen: set[str] = set()
    for i, entry in enumerate(data.get("control") or []):
        where = f"{source}: control[{i}]"
        if not isinstance(entry, dict) or set(entry) != {"name", "rules", "areas"}:
            raise MappingError(f"{where}: give exactly the keys name, rules and areas")
        name = entry["name"]
        if name not in CONTROLS:
            raise MappingError(f"{where}: unknown control {name!r} (known: "
                               f"{', '.join(CONTROLS)})")
        if name in seen:
            raise MappingError(f"{where}: control {name!r} is mapped twice")
        seen.add(name)
        for key, known in (("rules", rules), ("areas", areas)):
            refs = entry[key]
            if not isinstance(refs, list) or not refs:
                raise MappingError(f"{where}.{key}: give a non-empty list")
            missing = [r for r in refs if r not in known]
            if missing:
                raise MappingError(f"{where}.{key}: {missing} not defined under [{key}.*]")
        controls.append(ControlMapping(name, tuple(entry["rules"]), tuple(entry["areas"])))
    if not controls:
        raise MappingError(f"{source}: no [[control]] entries")
    return Mapping(rules, areas, tuple(controls))


@lru_cache(maxsize=1)
def load_mapping(path: Path = MAPPING_FILE) -> Mapping:
    return parse_mapping(path.read_text(encoding="utf-8"), str(path.name))
