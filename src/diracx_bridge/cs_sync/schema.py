"""Walk the legacy data alongside DiracX's ``Config`` model and take out what it does not model.

diracx's own cs-sync either refuses the whole CS for one unknown option (``extra="forbid"`` models:
users, groups, Operations, DIRAC) or drops whole sections without a trace (``extra="ignore"``:
Resources keeps only Computing/OSCompatibility). Here both cases become report entries with the
legacy CS path, and the rest is carried over untouched. The walk reads the model classes
themselves (field aliases and annotations), so an extension's own ``Config`` is handled the
same way as diracx's.
"""

from __future__ import annotations

import contextlib
import re
import types
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel

from diracx_bridge.capabilities import NAME, RELEASE
from diracx_bridge.cs_sync.paths import Provenance
from diracx_bridge.cs_sync.report import Kind, Report

#: Option names whose value is served to every authenticated DiracX user by ``GET /api/config/``.
_SECRET_NAME = re.compile(r"(password|passwd|secret|apikey|api_key|privatekey|private_key|token)$", re.IGNORECASE)

#: Reasons that say more than "not modelled", by legacy path prefix.
_HINTS = {
    "/Resources/Sites": f"{NAME} does not model sites, CEs or queues; they stay in the legacy CS",
    "/Resources/StorageElements": f"{NAME} does not model storage elements; they stay in the legacy CS",
    "/Resources/StorageElementBases": f"{NAME} does not model storage elements; they stay in the legacy CS",
    "/Resources/FileCatalogs": f"{NAME} does not model file catalogs; they stay in the legacy CS",
}

_MAPPING_ORIGINS = (dict, Mapping, MutableMapping)


@dataclass(frozen=True, slots=True)
class Shape:
    """What the model expects at one place: a model, a mapping of something, free-form data or a value."""

    kind: str  # "model" | "mapping" | "free" | "value"
    arg: Any = None


_FIELDS: dict[type[BaseModel], dict[str, Any]] = {}
_SHAPES: dict[Any, Shape] = {}


def fields_of(model: type[BaseModel]) -> dict[str, Any]:
    """Accepted keys (alias and Python name: the models set ``populate_by_name``) -> annotation."""
    cached = _FIELDS.get(model)
    if cached is None:
        cached = {}
        for name, info in model.model_fields.items():
            cached[name] = info.annotation
            if info.alias:
                cached[info.alias] = info.annotation
        _FIELDS[model] = cached
    return cached


def _strip_optional(annotation: Any) -> Any:
    origin = get_origin(annotation)
    if origin is Annotated:
        return _strip_optional(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        members = [a for a in get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return _strip_optional(members[0])
    return annotation


def shape_of(annotation: Any) -> Shape:
    try:
        return _SHAPES[annotation]
    except (KeyError, TypeError):
        pass
    inner = _strip_optional(annotation)
    origin = get_origin(inner)
    if inner is Any:
        shape = Shape("free")
    elif isinstance(inner, type) and issubclass(inner, BaseModel):
        shape = Shape("model", inner)
    elif origin in _MAPPING_ORIGINS or inner in _MAPPING_ORIGINS:
        args = get_args(inner)
        value = args[1] if len(args) == 2 else Any
        shape = Shape("free") if _strip_optional(value) is Any else Shape("mapping", value)
    else:
        shape = Shape("value")
    with contextlib.suppress(TypeError):  # unhashable annotations are just not cached
        _SHAPES[annotation] = shape
    return shape


def count_options(value: Any) -> int:
    if isinstance(value, Mapping):
        return sum(count_options(v) for v in value.values())
    return 1


class Pruner:
    """Leaves out every key the model does not define, and reports each with its CS path.

    The input is not modified: the pruned data is made of new dicts wherever the model has a
    model or a mapping of models (what validation then rewrites in place), and shares the
    free-form parts and the values with the input.
    """

    def __init__(self, report: Report, provenance: Provenance) -> None:
        self.report = report
        self.provenance = provenance

    def prune(self, data: dict[str, Any], model: type[BaseModel]) -> dict[str, Any]:
        return self._model(data, model, ())

    def _model(self, data: dict[str, Any], model: type[BaseModel], location: tuple[str, ...]) -> dict[str, Any]:
        fields = fields_of(model)
        extra = model.model_config.get("extra")
        pruned: dict[str, Any] = {}
        for key, child in data.items():
            annotation = fields.get(key)
            if annotation is None:
                if extra == "allow":
                    pruned[key] = child
                else:
                    self._drop(key, child, model, (*location, key), refused=extra == "forbid")
            elif isinstance(child, dict):
                pruned[key] = self._walk(child, annotation, (*location, key))
            else:
                pruned[key] = child
        return pruned

    def _walk(self, data: dict[str, Any], annotation: Any, location: tuple[str, ...]) -> dict[str, Any]:
        shape = shape_of(annotation)
        if shape.kind == "model":
            return self._model(data, shape.arg, location)
        if shape.kind == "mapping":
            if shape_of(shape.arg).kind == "value":
                return dict(data)
            return {
                key: self._walk(child, shape.arg, (*location, key)) if isinstance(child, dict) else child
                for key, child in data.items()
            }
        if shape.kind == "free":
            self._scan_secrets(data, location)
        return data

    def _drop(self, key: str, value: Any, model: type[BaseModel], location: tuple[str, ...], *, refused: bool) -> None:
        path = self.provenance.legacy_path(location)
        reason = next((hint for prefix, hint in _HINTS.items() if path.startswith(prefix)), None)
        if reason is None:
            where = f"DiracX's {model.__name__} model has no such field"
            reason = (
                f"{where} (diracx {RELEASE}'s cs-sync refuses the whole CS because of it)"
                if refused
                else f"{where} (diracx {RELEASE} drops it without a word)"
            )
        if isinstance(value, dict):
            options = count_options(value)
            detail = f"section, {options} option{'' if options == 1 else 's'}"
        else:
            detail = ""
        self.report.add(path, reason, Kind.SKIPPED, detail)

    def _scan_secrets(self, data: Mapping[str, Any], location: tuple[str, ...]) -> None:
        """Free-form sections (Systems, LocalSite, ...) are published as they are: flag what looks secret."""
        for key, value in data.items():
            if isinstance(value, Mapping):
                self._scan_secrets(value, (*location, key))
            elif isinstance(value, str) and value and _SECRET_NAME.search(key):
                self.report.add(
                    self.provenance.legacy_path((*location, key)),
                    "looks like a secret: GET /api/config/ serves it to every authenticated DiracX user; "
                    "move it out of the CS (DiracX reads its own secrets from its environment)",
                    Kind.WARNING,
                )
