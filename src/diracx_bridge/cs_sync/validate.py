"""Validation by DiracX's own ``Config`` model, with the semantics diracx's cs-sync uses, once per changed VO.

``DIRAC_COMPAT_ENABLE_CS_CONVERSION`` switches diracx's models into legacy mode: comma-separated
strings become lists, ``"None"`` becomes ``None``, and ``Operations/Defaults`` is kept instead of
being merged into every VO. It is an environment variable read at validation time, so it is set
here only around the call, under a lock, and restored afterwards (DIRAC's own
``diracxVerifyConfig`` sets it for the whole process and forgets it when the subprocess times out).

Where the time goes: 20,000 users are 20,000 ``UserConfig`` validations, 85% of which is
pydantic's e-mail address check. So the registry is validated VO by VO, each with the model the
``Config`` class declares for a VO (``Config.registry: Mapping[str, RegistryConfig]``, an
extension's own if installed), once, in legacy mode; a VO whose legacy data has the fingerprint
recorded at the last export is not validated again (its recorded result is used). The rest of
the configuration (DIRAC, Operations, Resources, the free-form sections) is validated by the
``Config`` class itself, in legacy mode, then, as the DiracX server will read the committed file,
in server mode (where ``Operations/Defaults`` is merged into each VO), with every VO present in
the registry as an already-validated entry: the ``Config`` class reads only the VO names there.
A VO's registry is not validated a second time in server mode: what DiracX's model dumps from a
validated registry validates again to the same data (JSON-mode dumps of lists, sets, e-mails,
numbers and booleans; a unit test holds the model to it), so the second validation cost as much as
the first and could not fail.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from diracx_bridge.cs_sync.errors import Problem, ValidationFailed
from diracx_bridge.cs_sync.paths import Provenance

LEGACY_MODE_VARIABLE = "DIRAC_COMPAT_ENABLE_CS_CONVERSION"
OS_COMPATIBILITY = ("Resources", "Computing", "OSCompatibility")

_ENVIRONMENT_LOCK = threading.RLock()


@contextmanager
def scoped_environment(name: str, value: str | None) -> Iterator[None]:
    """Set (or, with ``None``, unset) one variable for the duration of the block, then restore it."""
    with _ENVIRONMENT_LOCK:
        previous = os.environ.get(name)
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = previous


def legacy_mode() -> AbstractContextManager[None]:
    return scoped_environment(LEGACY_MODE_VARIABLE, "1")


def server_mode() -> AbstractContextManager[None]:
    """Legacy mode off, even if the admin's environment sets it: the DiracX server never runs with it."""
    return scoped_environment(LEGACY_MODE_VARIABLE, None)


def diracx_config_class() -> type[BaseModel]:
    """The ``Config`` class DiracX itself uses: an installed extension's, or diracx's own."""
    from diracx.core.extensions import DiracEntryPoint, select_from_extension

    return select_from_extension(group=DiracEntryPoint.CORE, name="config")[0].load()  # type: ignore[no-any-return]


def _existing_keys(data: Any, location: Sequence[str | int]) -> list[str | int]:
    """The part of a pydantic error location that names keys of the input.

    pydantic adds tags for union members and validators (``function-after[...]``); they are not
    CS keys. The last element is kept even when absent: it is the missing or unexpected field.
    """
    keys: list[str | int] = []
    node = data
    last = len(location) - 1
    for index, part in enumerate(location):
        in_mapping = isinstance(node, Mapping) and part in node
        in_list = isinstance(node, list | tuple) and isinstance(part, int) and 0 <= part < len(node)
        if in_mapping or in_list:
            keys.append(part)
            node = node[part]
        elif index == last and isinstance(part, str) and not part.endswith("]"):
            keys.append(part)
    return keys


def _problems(error: ValidationError, data: Any, provenance: Provenance, prefix: tuple[str, ...] = ()) -> list[Problem]:
    """The errors of a validation of ``data``, found at ``prefix`` in the configuration, as CS paths."""
    problems: list[Problem] = []
    for item in error.errors(include_url=False):
        keys = [*prefix, *_existing_keys(data, item["loc"])]
        path = provenance.legacy_path(keys)
        indices = [k for k in keys if isinstance(k, int)]
        message = item["msg"]
        if item["type"] == "missing":
            message = "required, but missing"
        elif not isinstance(item.get("input"), Mapping):
            value = repr(item.get("input"))
            message += f" (got {value[:80]}{'...' if len(value) > 80 else ''}"
            message += f", item {indices[-1] + 1} of the list)" if indices else ")"
        problems.append(Problem(path, message))
    return problems


def fingerprint(data: Any) -> str:
    """What identifies the legacy data of a VO's registry: equal data, equal fingerprint."""
    return hashlib.sha256(json.dumps(data, separators=(",", ":")).encode()).hexdigest()


class ValidatedVOs(Protocol):
    """Registries validated at an earlier export by the same exporter (see :mod:`.state`)."""

    def validated(self, vo: str, fingerprint: str) -> dict[str, Any] | None: ...


@dataclass
class Validation:
    """The exported configuration, and how each VO's registry was obtained."""

    config: dict[str, Any]
    #: VO -> fingerprint of the legacy data its registry was validated from
    fingerprints: dict[str, str] = field(default_factory=dict)
    validated: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)


def registry_model(config_class: type[BaseModel]) -> type[BaseModel] | None:
    """The model of one VO's registry, if the Config class declares ``Registry`` as a mapping of models."""
    from diracx_bridge.cs_sync.schema import fields_of, shape_of

    registry = shape_of(fields_of(config_class).get("Registry"))
    if registry.kind != "mapping":
        return None
    entry = shape_of(registry.arg)
    return entry.arg if entry.kind == "model" else None  # type: ignore[no-any-return]


def _field_name(model: type[BaseModel], alias: str) -> str:
    return next((name for name, info in model.model_fields.items() if alias in (name, info.alias)), alias)


def validate(
    raw: dict[str, Any],
    provenance: Provenance,
    config_class: type[BaseModel],
    known: ValidatedVOs | None = None,
) -> Validation:
    """Validate in legacy mode and return the configuration as diracx's cs-sync dumps it.

    ``raw`` is consumed (the legacy adaptor rewrites it in place). With ``known``, a VO whose
    legacy data is unchanged since it was validated is taken from there, not validated again.

    OSCompatibility is validated outside legacy mode: diracx's legacy adaptor for it looks
    up ``OSCompatibility`` *inside* the OSCompatibility mapping and so always yields ``{}``, which
    would silently empty the platform table DiracX uses to match jobs to platforms.
    """
    model = registry_model(config_class)
    registry = raw.get("Registry")
    if model is None or not isinstance(registry, dict):
        return Validation(_validate_whole(raw, provenance, config_class))
    computing_model = _computing_model(config_class)
    os_compatibility = _pop_path(raw, OS_COMPATIBILITY) if computing_model is not None else None
    result = Validation({})
    problems: list[Problem] = []
    exported: dict[str, Any] = {}
    with legacy_mode():
        for vo, data in registry.items():
            if known is not None:
                result.fingerprints[vo] = fingerprint(data)
                previous = known.validated(vo, result.fingerprints[vo])
                if previous is not None:
                    exported[vo] = previous
                    result.reused.append(vo)
                    continue
            try:
                entry = model.model_validate(data)
            except ValidationError as exc:
                problems += _problems(exc, data, provenance, ("Registry", vo))
                continue
            exported[vo] = entry.model_dump(by_alias=True, exclude_unset=True, mode="json")
            result.validated.append(vo)
        # The Config class sees every VO (it gives each one its Operations entry), not their content again.
        raw["Registry"] = dict.fromkeys(registry, model.model_construct())
        try:
            config = config_class.model_validate(raw)
        except ValidationError as exc:
            raw["Registry"] = registry
            problems += _problems(exc, raw, provenance)
        if problems:
            raise ValidationFailed(problems)
        dumped = config.model_dump(
            by_alias=True, exclude_unset=True, mode="json", exclude={_field_name(config_class, "Registry")}
        )
    dumped["Registry"] = exported
    if os_compatibility is not None and computing_model is not None:
        computing = dumped.setdefault("Resources", {}).setdefault("Computing", {})
        computing["OSCompatibility"] = _os_compatibility(os_compatibility, computing_model, provenance)
    result.config = dumped
    return result


def _validate_whole(raw: dict[str, Any], provenance: Provenance, config_class: type[BaseModel]) -> dict[str, Any]:
    """A Config class whose registry is not a mapping of VO models: validated and checked as a whole."""
    computing_model = _computing_model(config_class)
    os_compatibility = _pop_path(raw, OS_COMPATIBILITY) if computing_model is not None else None
    with legacy_mode():
        try:
            config = config_class.model_validate(raw)
        except ValidationError as exc:
            raise ValidationFailed(_problems(exc, raw, provenance)) from None
        dumped = config.model_dump(by_alias=True, exclude_unset=True, mode="json")
    if os_compatibility is not None and computing_model is not None:
        computing = dumped.setdefault("Resources", {}).setdefault("Computing", {})
        computing["OSCompatibility"] = _os_compatibility(os_compatibility, computing_model, provenance)
    _check_as_served(dumped, provenance, config_class, with_registry=True)
    return dumped


def check_as_served(config: Mapping[str, Any], provenance: Provenance, config_class: type[BaseModel]) -> None:
    """Validate the exported configuration as the DiracX server will, and refuse what it would refuse.

    The server validates ``yaml.safe_load(default.yml)`` with legacy mode off. The file is a
    SafeDumper dump of ``config`` (plain str/int/float/bool/None/list/dict), which loads back
    as equal data, so a JSON copy is validated here: the same input, without paying for a YAML
    parse of the whole file. The copy is needed because the server-mode validator rewrites
    ``Operations`` in place. Each VO's registry is given as an already-validated entry (see the
    module's docstring); a Config class without a per-VO registry model is checked whole.
    """
    _check_as_served(config, provenance, config_class, with_registry=registry_model(config_class) is None)


def _check_as_served(
    config: Mapping[str, Any], provenance: Provenance, config_class: type[BaseModel], *, with_registry: bool
) -> None:
    def served() -> dict[str, Any]:
        if with_registry:
            return json.loads(json.dumps(config))  # type: ignore[no-any-return]
        data: dict[str, Any] = json.loads(json.dumps({k: v for k, v in config.items() if k != "Registry"}))
        model = registry_model(config_class)
        if model is not None and isinstance(config.get("Registry"), Mapping):
            data["Registry"] = dict.fromkeys(config["Registry"], model.model_construct())
        return data

    with server_mode():
        try:
            config_class.model_validate(served())
        except ValidationError as exc:
            problems = _problems(exc, served(), provenance)
            raise ValidationFailed(
                [Problem(p.path, f"{p.message} [the DiracX server would refuse the exported file]") for p in problems]
            ) from None


def _pop_path(data: dict[str, Any], path: Sequence[str]) -> Any:
    node: Any = data
    for key in path[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
        if node is None:
            return None
    if not isinstance(node, dict):
        return None
    return node.pop(path[-1], None)


def _os_compatibility(value: Any, model: type[BaseModel], provenance: Provenance) -> Any:
    """Validate the platform table with DiracX's own model, as the server will, and dump it sorted."""
    if isinstance(value, Mapping):
        value = {platform: _comma_list(compatible) for platform, compatible in value.items()}
    with server_mode():
        try:
            computing = model.model_validate({"OSCompatibility": value})
        except ValidationError as exc:
            problems = _problems(exc, {"OSCompatibility": value}, provenance)
            raise ValidationFailed([Problem("/Resources/Computing" + p.path, p.message) for p in problems]) from None
    table = computing.model_dump(by_alias=True, mode="json")["OSCompatibility"]
    return {platform: sorted(compatible) for platform, compatible in table.items()}


def _comma_list(value: Any) -> Any:
    return [x.strip() for x in value.split(",") if x.strip()] if isinstance(value, str) else value


def _computing_model(config_class: type[BaseModel]) -> type[BaseModel] | None:
    """``Resources.Computing`` of the Config class, if it has the shape the targeted diracx release gives it."""
    from diracx_bridge.cs_sync.schema import fields_of, shape_of

    resources = shape_of(fields_of(config_class).get("Resources"))
    if resources.kind != "model":
        return None
    computing = shape_of(fields_of(resources.arg).get("Computing"))
    if computing.kind != "model" or "OSCompatibility" not in fields_of(computing.arg):
        return None
    return computing.arg  # type: ignore[no-any-return]
