"""The appliance config: one YAML file, optional conf.d fragments, typed sections.

Every problem is reported as ``file:line:column: message`` pointing at the YAML that
caused it, and all problems are reported in one run: a technician on a device fixes the
whole file at once instead of rerunning ``check-config`` once per typo.
"""

from __future__ import annotations

import difflib
import glob
import hashlib
import importlib.metadata
import json
import logging
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import UnionType
from typing import (
    TYPE_CHECKING,
    Annotated,
    Any,
    Literal,
    TypeAlias,
    Union,
    get_args,
    get_origin,
)

import pydantic
import yaml
from pydantic import ConfigDict, Field, StringConstraints
from pydantic_core import ErrorDetails

from edgeloop.plugin import Plugin
from edgeloop.wiring import Claim, conflicts

if TYPE_CHECKING:
    from edgeloop.realtime.io_part import IoContext, IoPart

log = logging.getLogger("edgeloop.config")

ENTRY_POINT_GROUP = "edgeloop.plugins"
_RESERVED = ("runtime", "include")
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_MAX_SHOWN = 40  # longer input values are left out of messages: the line number finds them
_OWN_MESSAGES = ("value_error", "assertion_error")  # raised by section validators, kept as is
# stands in for a value YAML could not read: reported once, not again as the wrong type
_UNREADABLE = object()

KeyPath: TypeAlias = tuple[Any, ...]


class Section(pydantic.BaseModel):
    """Base for every section model and sub-model: unknown keys are errors, values fixed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def warnings(self) -> list[tuple[KeyPath, str]]:
        """Valid but unwise settings, as (key path within the section, message)."""
        return []


@dataclass(frozen=True, slots=True)
class Problem:
    file: Path
    line: int
    column: int
    message: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        label = "warning: " if self.severity == "warning" else ""
        return f"{self.file}:{self.line}:{self.column}: {label}{self.message}"


class ConfigError(Exception):
    problems: list[Problem]

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(problem) for problem in problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class ConfigSection:
    """A plugin's config section and what it builds in each process.

    ``plugin`` builds the control-process part (systems, resources) from the validated
    section; ``io`` (optional) the io-process part (a driver, a provider); the wire
    message types it speaks go in ``message_types``, so that both processes build the
    same registry. With several io workers (``runtime.io_workers``), an io part runs in
    the first worker only (a device has one connection), unless ``io_in_every_worker``
    says it can share its work out (listeners with ``SO_REUSEPORT``).
    """

    name: str
    model: type[Section]
    plugin: Callable[[Any], Plugin]
    io: Callable[[Any, IoContext], IoPart] | None = None
    message_types: tuple[type, ...] = ()
    io_in_every_worker: bool = False
    # the World fields the section writes and reads (edgeloop.wiring), key paths in it
    wiring: Callable[[Any], Iterable[Claim]] | None = None


DEFAULT_STATE_DIR = Path("/var/lib/edgeloop")  # systemd's StateDirectory=edgeloop


class RuntimeConfig(Section):
    # appliance name shown in logs and status
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)] = (
        "edgeloop"
    )
    # strict: YAML reads "yes" as true, which lax pydantic would turn into 1.0 Hz
    rate_hz: Annotated[float, Field(gt=0, le=1000, strict=True)] = 100.0
    # stop: run Shutdown (actuators to safe values) and stop the App
    # skip: skip the failing system for this pass, raise an alarm, keep running
    on_system_error: Literal["stop", "skip"] = "stop"
    # the real-time runner (docs/config.md explains each, and what to do when refused)
    cpu: Annotated[int, Field(ge=0, le=1023, strict=True)] | Literal["auto"] | None = "auto"
    rt_priority: Annotated[int, Field(ge=0, le=99, strict=True)] = 50
    # the io process's SCHED_FIFO, below the control's: the e-stop's safe values must
    # not wait for the CPU behind ordinary processes (docs/safety.md has the figures)
    io_rt_priority: Annotated[int, Field(ge=0, le=99, strict=True)] = 10
    lock_memory: Annotated[bool, Field(strict=True)] = True
    gc: Literal["freeze", "normal"] = "freeze"
    spin_us: Annotated[int, Field(ge=0, le=5000, strict=True)] = 200
    overrun_policy: Literal["warn", "skip", "safe_stop"] = "warn"
    update_budget_ms: Annotated[float, Field(ge=0, le=1000, strict=True)] = 1.0
    io_records_per_tick: Annotated[int, Field(ge=1, le=1_000_000, strict=True)] = 1000
    io_buffer_mb: Annotated[int, Field(ge=1, le=4096, strict=True)] = 64
    control_timeout_s: Annotated[float, Field(gt=0, le=60, strict=True)] = 2.0
    io_timeout_s: Annotated[float, Field(gt=0, le=600, strict=True)] = 2.0
    # imports and plugin start-up before the first tick or heartbeat: a slow device
    # (or an emulated one) needs longer than a PC
    startup_timeout_s: Annotated[float, Field(gt=0, le=600, strict=True)] = 15.0
    # io processes: more than one shares the network listeners out (SO_REUSEPORT)
    io_workers: Annotated[int, Field(ge=1, le=64, strict=True)] = 1
    # the first io worker runs the field drivers and no network listener (safe values
    # never wait behind robots and dashboards); the others run the network
    io_drivers_alone: Annotated[bool, Field(strict=True)] = False
    # what must outlive a restart and a power cut: the audit log (systemd's StateDirectory)
    state_dir: Path = DEFAULT_STATE_DIR
    # record every input of the control process for `edgeloop replay` (docs/data.md)
    record: Path | None = None
    record_max_mb: Annotated[int, Field(ge=1, le=1 << 20, strict=True)] = 1024
    record_segment_mb: Annotated[int, Field(ge=1, le=4096, strict=True)] = 64
    record_hash_every: Annotated[int, Field(ge=1, le=1_000_000, strict=True)] = 100

    @pydantic.field_validator("io_drivers_alone")
    @classmethod
    def _leaves_a_network_worker(cls, alone: bool, info: pydantic.ValidationInfo) -> bool:
        if alone and info.data.get("io_workers", 2) < 2:  # io_workers is validated first
            raise ValueError(
                "io_drivers_alone needs io_workers of 2 or more: one for the drivers, "
                "the others for the network"
            )
        return alone

    @property
    def network_workers(self) -> range:
        """The io workers that run the network listeners."""
        return range(1 if self.io_drivers_alone else 0, self.io_workers)


@dataclass(frozen=True)
class Config:
    path: Path
    runtime: RuntimeConfig
    sections: dict[str, Section]
    warnings: list[Problem]
    # where each key path is written, for what is found after loading (``where``)
    places: Mapping[KeyPath, _Place] = field(default_factory=dict, repr=False, compare=False)
    # every section's writes and reads of World fields, key paths from the section name
    wiring: tuple[Claim, ...] = ()

    def where(self, path: KeyPath) -> str:
        """``file:line:column`` of the key ``path`` (or of the nearest key above it
        that is written; the file's start for a config not read from a file)."""
        return str(self.mark(path))

    def mark(self, path: KeyPath) -> _Mark:
        for end in range(len(path), 0, -1):
            place = self.places.get(path[:end])
            if place is not None:
                return place.key
        return _Mark(self.path, 1, 1)


def config_digest(config: Config) -> str:
    """A digest of what ``config`` says, not of how it is written (comments, layout and
    key order do not count): two processes with the same digest run the same config."""
    said = {
        "runtime": config.runtime.model_dump(mode="json"),
        "sections": {
            name: model.model_dump(mode="json") for name, model in config.sections.items()
        },
    }
    return hashlib.sha256(json.dumps(said, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class _Mark:
    file: Path
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"

    def problem(self, message: str, severity: Literal["error", "warning"] = "error") -> Problem:
        return Problem(self.file, self.line, self.column, message, severity)


@dataclass(frozen=True, slots=True)
class _Place:
    key: _Mark
    value: _Mark  # the scalar itself, so "0 must be greater than 0" points at the 0


@dataclass(slots=True)
class _Document:
    data: dict[Any, Any]
    places: dict[KeyPath, _Place]


def installed_sections(names: Iterable[str] | None = None) -> list[ConfigSection]:
    """Sections advertised under the "edgeloop.plugins" entry-point group, sorted by name;
    only those whose entry point is named in ``names``, if given.

    ``names`` is how a process imports just the plugins its config uses: a driver's bus
    library (cantools, pymodbus) costs megabytes a 1 GB device should not spend on a
    bus it does not have. A broken or clashing plugin is logged and skipped: it must not
    stop the appliance from reporting on the rest of its config.
    """
    wanted = None if names is None else set(names)
    found: dict[str, ConfigSection] = {}
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if wanted is not None and entry.name not in wanted:
            continue
        section = _section_from(entry)
        if section is not None and (section.name in found or section.name in _RESERVED):
            log.warning("skipping plugin %r: section name %r is taken", entry.value, section.name)
        elif section is not None:
            found[section.name] = section
    return sorted(found.values(), key=lambda section: section.name)


def _installed_names() -> list[str]:
    """The names of the installed plugins' sections, without importing them."""
    return [entry.name for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)]


def _section_from(entry: importlib.metadata.EntryPoint) -> ConfigSection | None:
    try:
        loaded = entry.load()
    except Exception as err:  # any import-time failure of a third-party plugin
        log.warning("skipping plugin %r: cannot load %s: %s", entry.name, entry.value, err)
        return None
    if not isinstance(loaded, ConfigSection):
        log.warning("skipping plugin %r: %s is not a ConfigSection", entry.name, entry.value)
        return None
    return loaded


def load_config_or_report(path: str | Path) -> Config | None:
    """``load_config`` for commands: None, with every problem printed to stderr, when
    the file is invalid."""
    try:
        return load_config(path)
    except ConfigError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        return None


def load_config(path: str | Path, sections: Sequence[ConfigSection] | None = None) -> Config:
    """Load, merge and validate a config file; raise ConfigError listing every problem.

    ``sections``: the plugins to validate against; by default the installed ones that
    the file's sections name (the others are not even imported)."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "it is not UTF-8 text"
        raise ConfigError([Problem(file, 1, 1, f"cannot read config file: {reason}")]) from None
    return parse_config_text(text, file, sections)


def parse_config_text(
    text: str, file: Path, sections: Sequence[ConfigSection] | None = None
) -> Config:
    """Like load_config, with the main file's text given; includes are read from disk."""
    main, problems = _parse(text, file)
    warnings: list[Problem] = []
    for fragment_file in _included_files(main, file, problems, warnings):
        problems += _merge_fragment(main, fragment_file)
    known: set[str] = set()
    if sections is None:
        sections = installed_sections(main.data)
        known.update(_installed_names())
    root = _root_model(sections)
    known.update(root.model_fields)
    try:
        validated = root.model_validate(main.data)
    except pydantic.ValidationError as err:
        errors = err.errors(include_url=False)
        problems += [
            _problem_from(e, main, root, known) for e in errors if e["input"] is not _UNREADABLE
        ]
    if problems:
        raise ConfigError(_sorted(problems + warnings))
    names = {section.name for section in sections}
    present = {name: getattr(validated, name) for name in main.data if name in names}
    for name, model in present.items():
        warnings += _section_warnings(name, model, main)
    config = Config(
        path=file,
        runtime=validated.runtime,
        sections=present,
        warnings=_sorted(warnings),
        places=main.places,
        wiring=_wiring(present, sections),
    )
    clashes = conflicts(config.wiring, config.where)
    if clashes:
        raise ConfigError(
            _sorted(
                [config.mark(c.at).problem(_prefixed(c.at, text)) for c, text in clashes] + warnings
            )
        )
    return config


def _wiring(present: dict[str, Section], sections: Sequence[ConfigSection]) -> tuple[Claim, ...]:
    """Every present section's claims, in file order, their key paths made whole."""
    declared = {section.name: section.wiring for section in sections}
    return tuple(
        replace(claim, at=(name, *claim.at))
        for name, model in present.items()
        if (claims_of := declared[name]) is not None
        for claim in claims_of(model)
    )


def _section_warnings(name: str, model: Section, document: _Document) -> list[Problem]:
    """What a valid section itself warns about (``Section.warnings``), placed on its line."""
    found = []
    for path, message in model.warnings():
        full = _data_path(document.data, (name, *path))
        found.append(document.places[full].value.problem(_prefixed(full, message), "warning"))
    return found


def _sorted(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda problem: (str(problem.file), problem.line, problem.column))


def _parse(text: str, file: Path) -> tuple[_Document, list[Problem]]:
    builder = _Builder(file)
    try:
        data = builder.read(text)
    except yaml.YAMLError as err:
        return _Document({}, {}), [_yaml_problem(err, text, file)]
    start = _Mark(file, 1, 1)
    builder.places[()] = _Place(start, start)
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else f"the value {_shown(data)}"
        message = f"the file must map section names to settings (runtime: ...), not {kind}"
        return _Document({}, builder.places), [*builder.problems, start.problem(message)]
    # an empty "runtime:" means "all defaults", as "runtime: {}" does
    sections = {key: {} if value is None else value for key, value in data.items()}
    return _Document(sections, builder.places), builder.problems


def _yaml_problem(err: yaml.YAMLError, text: str, file: Path) -> Problem:
    if isinstance(err, yaml.MarkedYAMLError) and err.problem_mark is not None:
        reason = " ".join(part for part in (err.context, err.problem) if part)
        mark = err.problem_mark
        return Problem(file, mark.line + 1, mark.column + 1, f"invalid YAML: {reason}")
    # a character YAML forbids (ReaderError) is known only by its offset in the text
    before = text[: getattr(err, "position", 0)]
    line, column = before.count("\n") + 1, len(before) - before.rfind("\n")
    return Problem(file, line, column, f"invalid YAML: {str(err).splitlines()[0]}")


class _Builder:
    """Turns composed YAML nodes into plain data, recording where each key path is written."""

    def __init__(self, file: Path) -> None:
        self.file = file
        self.loader: yaml.SafeLoader
        self.places: dict[KeyPath, _Place] = {}
        self.problems: list[Problem] = []

    def read(self, text: str) -> Any:
        self.loader = yaml.SafeLoader(text)
        try:
            root = self.loader.get_single_node()
            return {} if root is None else self.build(root, ())
        finally:
            self.loader.dispose()

    def build(self, node: yaml.Node, path: KeyPath, ancestors: tuple[yaml.Node, ...] = ()) -> Any:
        if any(node is ancestor for ancestor in ancestors):
            return self._error(node, path, "an alias refers to the mapping or list it is in")
        if isinstance(node, yaml.MappingNode) and node.tag == _MAP_TAG:
            return self._mapping(node, path, (*ancestors, node))
        if isinstance(node, yaml.SequenceNode) and node.tag == _SEQ_TAG:
            return [
                self._item(item, (*path, index), (*ancestors, node))
                for index, item in enumerate(node.value)
            ]
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, path)
        return self._error(node, path, f"YAML tag {node.tag!r} is not supported; remove it")

    def _mapping(
        self, node: yaml.MappingNode, path: KeyPath, ancestors: tuple[yaml.Node, ...]
    ) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                self._error(key_node, path, "a key must be a plain name, not a list or mapping")
                continue
            if key_node.tag == _MERGE_TAG:
                self._error(key_node, path, "merge keys (<<) are not supported; write the keys out")
                continue
            key = self._scalar(key_node, path)
            if key is _UNREADABLE:
                continue
            sub = (*path, key)
            if key in result:
                first = self.places[sub].key.line
                self._error(key_node, sub, f"duplicate key (first set on line {first}); keep one")
                continue
            value_mark = self._mark(
                value_node if isinstance(value_node, yaml.ScalarNode) else key_node
            )
            self.places[sub] = _Place(self._mark(key_node), value_mark)
            result[key] = self.build(value_node, sub, ancestors)
        return result

    def _item(self, node: yaml.Node, path: KeyPath, ancestors: tuple[yaml.Node, ...]) -> Any:
        self.places[path] = _Place(self._mark(node), self._mark(node))
        return self.build(node, path, ancestors)

    def _scalar(self, node: yaml.ScalarNode, path: KeyPath) -> Any:
        try:
            return self.loader.construct_object(node)
        except Exception:  # PyYAML raises ValueError, AttributeError, ... for bad tagged scalars
            return self._error(node, path, f"cannot read {node.value!r} as YAML tag {node.tag!r}")

    def _error(self, node: yaml.Node, path: KeyPath, message: str) -> object:
        self.problems.append(self._mark(node).problem(_prefixed(path, message)))
        return _UNREADABLE

    def _mark(self, node: yaml.Node) -> _Mark:
        return _Mark(self.file, node.start_mark.line + 1, node.start_mark.column + 1)


def _included_files(
    main: _Document, file: Path, problems: list[Problem], warnings: list[Problem]
) -> list[Path]:
    if "include" not in main.data:
        return []
    value = main.data.pop("include")
    patterns = [value] if isinstance(value, str) else value
    if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
        message = "include: must be a glob pattern or a list of them, e.g. 'conf.d/*.yaml'"
        problems.append(main.places[("include",)].value.problem(message))
        return []
    files: list[Path] = []
    for index, pattern in enumerate(patterns):
        matches = sorted(Path(match) for match in glob.glob(str(file.parent / pattern)))
        if not matches:
            place = main.places[("include",) if isinstance(value, str) else ("include", index)]
            message = f"include: {pattern!r} matches no file in {file.parent}"
            warnings.append(place.value.problem(message, "warning"))
        files += [m for m in matches if m not in files and m.resolve() != file.resolve()]
    return files


def _merge_fragment(main: _Document, file: Path) -> list[Problem]:
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "it is not UTF-8 text"
        return [Problem(file, 1, 1, f"cannot read included file: {reason}")]
    fragment, problems = _parse(text, file)
    if "include" in fragment.data:
        del fragment.data["include"]
        message = "include: only the main config file may include others; move it there"
        problems.append(fragment.places[("include",)].key.problem(message))
    _merge(main, fragment, (), problems)
    return problems


def _merge(main: _Document, fragment: _Document, path: KeyPath, problems: list[Problem]) -> None:
    """Mappings merge, lists concatenate (a fragment can add devices), scalars must not clash."""
    into, new = _at(main.data, path), _at(fragment.data, path)
    for key, value in new.items():
        sub = (*path, key)
        if key not in into:
            into[key] = value
            _adopt_places(main, fragment, sub, sub)
        elif isinstance(into[key], dict) and isinstance(value, dict):
            _merge(main, fragment, sub, problems)
        elif isinstance(into[key], list) and isinstance(value, list):
            offset = len(into[key])
            into[key].extend(value)
            for index in range(len(value)):
                _adopt_places(main, fragment, (*sub, index), (*sub, offset + index))
        else:
            message = f"also set at {main.places[sub].key}; keep one of them"
            problems.append(fragment.places[sub].key.problem(_prefixed(sub, message)))


def _at(data: Any, path: KeyPath) -> Any:
    for part in path:
        data = data[part]
    return data


def _adopt_places(main: _Document, fragment: _Document, source: KeyPath, target: KeyPath) -> None:
    for path, place in fragment.places.items():
        if path[: len(source)] == source:
            main.places[target + path[len(source) :]] = place


class _ConfigFile(pydantic.BaseModel):
    model_config = ConfigDict(extra="forbid")
    runtime: RuntimeConfig = RuntimeConfig()


def _root_model(sections: Sequence[ConfigSection]) -> type[_ConfigFile]:
    fields: dict[str, Any] = {section.name: (section.model, None) for section in sections}
    return pydantic.create_model("ConfigFile", __base__=_ConfigFile, **fields)


def _problem_from(
    error: ErrorDetails, document: _Document, root: type[pydantic.BaseModel], known: set[str]
) -> Problem:
    path = _data_path(document.data, error["loc"])
    place = document.places[path]
    if error["type"] == "extra_forbidden":
        return place.key.problem(_prefixed(path, _unknown_key(root, path, known)))
    if error["type"] == "missing":
        return place.key.problem(_prefixed(path, f"missing required key '{error['loc'][-1]}'"))
    return place.value.problem(_prefixed(path, _readable(error)))


def _data_path(data: Any, loc: Iterable[int | str]) -> KeyPath:
    """The part of a pydantic error location that exists in the data.

    Union member tags ("int", "Pump") and missing keys are left out.
    """
    path: list[Any] = []
    for part in loc:
        in_list = isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data)
        if in_list or (isinstance(data, dict) and part in data):
            path.append(part)
            data = data[part]
    return tuple(path)


def _unknown_key(root: type[pydantic.BaseModel], path: KeyPath, sections: set[str]) -> str:
    key = str(path[-1])
    if len(path) > 1:
        names = _field_names_at(root, path[:-1])
        return f"unknown key '{key}'{_suggestion(key, names, 'expected one of: ')}"
    names = sorted({*sections, "include"})
    hint = "no installed plugin provides it; known sections: "
    return f"unknown section '{key}'{_suggestion(key, names, hint)}"


def _suggestion(key: str, names: list[str], otherwise: str) -> str:
    if match := difflib.get_close_matches(key, names, n=1):
        return f" (did you mean '{match[0]}'?)"
    return f" ({otherwise}{', '.join(names)})" if names else ""


def _field_names_at(root: type[pydantic.BaseModel], path: KeyPath) -> list[str]:
    types: list[Any] = [root]
    for part in path:
        types = [
            child for kind in types for leaf in _leaves(kind) for child in _children(leaf, part)
        ]
    models = [leaf for kind in types for leaf in _leaves(kind) if _is_model(leaf)]
    return sorted(
        {field.alias or name for model in models for name, field in model.model_fields.items()}
    )


def _leaves(annotation: Any) -> Iterator[Any]:
    """The member types of an annotation, through Annotated, Optional and unions."""
    origin = get_origin(annotation)
    if origin is Annotated:
        yield from _leaves(get_args(annotation)[0])
    elif origin in (Union, UnionType):
        for member in get_args(annotation):
            yield from _leaves(member)
    else:
        yield annotation


def _children(annotation: Any, part: Any) -> list[Any]:
    """The annotations of what `part` selects inside a value of this type."""
    if _is_model(annotation):
        fields = annotation.model_fields.items()
        return [field.annotation for name, field in fields if part in (name, field.alias)]
    origin, args = get_origin(annotation), get_args(annotation)
    if not isinstance(origin, type) or not args:
        return []
    if issubclass(origin, Mapping):
        return [args[-1]]
    return [arg for arg in args if arg is not Ellipsis] if issubclass(origin, Iterable) else []


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel)


def _readable(error: ErrorDetails) -> str:
    message = error["msg"]
    if error["type"] in _OWN_MESSAGES:
        return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    shown = _shown(error["input"])
    if shown is not None and message.startswith("Input should"):
        return f"{shown} must{message.removeprefix('Input should')}"
    message = message[:1].lower() + message[1:]
    return f"{message} (got {shown})" if shown is not None else message


def _shown(value: Any) -> str | None:
    if isinstance(value, (dict, list, tuple, set)):
        return None
    plain = value is None or isinstance(value, (str, bool))
    text = json.dumps(value) if plain else str(value)
    return text if len(text) <= _MAX_SHOWN else None


def _prefixed(path: KeyPath, message: str) -> str:
    return f"{_dotted(path)}: {message}" if path else message


def _dotted(path: KeyPath) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.removeprefix(".")
