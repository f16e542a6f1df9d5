"""Reading a config from YAML or JSON with the line of each problem, writing it back, and its JSON Schema."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ValidationError

from .base import _SECRET_NAME
from .checks import cross_check
from .model import IntegrationConfig, SyncCondition, config_to_dict
from .problems import ConfigError, Problem, _problem, _show

if TYPE_CHECKING:  # yaml is only needed to read or write files, not on a Lambda's cold path
    import yaml


def _path(loc: Iterable[Any]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "(root)"


def _model_at(loc: Sequence[Any]) -> type[BaseModel] | None:
    """The model class that holds the last element of `loc`, to list the fields it allows."""
    model: type[BaseModel] = IntegrationConfig
    for part in loc:
        if isinstance(part, int):
            continue
        fields = {(f.alias or name): f for name, f in model.model_fields.items()}
        info = fields.get(part)
        if info is None:
            return None
        inner = _inner_model(info.annotation)
        if inner is None:
            return None
        model = inner
    return model


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


_TYPE_WORDS = {
    "int_parsing": "a whole number",
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "string_type": "text",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping (key: value)",
    "model_type": "a mapping (key: value)",
    "model_attributes_type": "a mapping (key: value)",
    "too_short": "a non-empty list",
}


def _from_pydantic(error: Mapping[str, Any]) -> Problem | None:
    kind, loc, ctx = error["type"], error["loc"], error.get("ctx") or {}
    path = _path(loc)
    if kind == "config_cross_check":
        return None  # reported from the raw data by cross_check, each with its own path
    if kind == "config_value":
        allowed = str(ctx["allowed"])
        return Problem(path, f"found {ctx['found']}; allowed: {allowed}", found=str(ctx["found"]), allowed=allowed)
    if kind == "literal_error":
        return _problem(path, error["input"], str(ctx.get("expected", "")).replace(" or ", ", "))
    if kind == "missing":
        return Problem(path, "missing; this field is required", allowed="a value")
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1])
        names = [f.alias or n for n, f in model.model_fields.items()] if model else []
        close = difflib.get_close_matches(str(loc[-1]), names, 1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        allowed = ", ".join(names) or "none"
        return Problem(path, f"unknown field{hint}; allowed: {allowed}", found=repr(loc[-1]), allowed=allowed)
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        words = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}
        limits = [f"{words[kind]} {v}" for v in ctx.values()]
        return _problem(path, error["input"], "a number " + " and ".join(limits))
    if kind in _TYPE_WORDS:
        return _problem(path, error["input"], _TYPE_WORDS[kind])
    return Problem(path, f"found {_show(error.get('input'))}; {error['msg']}")


# --- YAML -----------------------------------------------------------------------------------------------------


def _index_nodes(node: yaml.Node, path: str, lines: dict[str, int], problems: list[Problem]) -> None:
    """Maps each config path to its line, and reports duplicate keys (PyYAML silently keeps the last one)."""
    import yaml

    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            child = f"{path}.{key}" if path else key
            line = key_node.start_mark.line + 1
            if key in seen:
                problems.append(Problem(child, f"duplicate key; first written on line {seen[key]}", line=line))
                continue
            seen[key] = line
            lines[child] = line
            _index_nodes(value_node, child, lines, problems)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index_nodes(item, f"{path}[{i}]", lines, problems)


def _line_for(path: str, lines: Mapping[str, int]) -> int | None:
    while path:
        if path in lines:
            return lines[path]
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    return None


#: YAML 1.1 reads these plain words as true/false; in a sync condition they are refused, not guessed
_YES_NO_WORDS = re.compile(r"^(?:y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$")
_STR_TAG = "tag:yaml.org,2002:str"
_CONDITION_VALUES = ("equals", "not_equals", "in")


def _core_loader() -> type:
    """A PyYAML SafeLoader with the YAML 1.2 core schema instead of YAML 1.1's implicit types.

    YAML 1.1 (PyYAML's default) reads `NO`, `yes`, `on`, `off`, `y`, `n` as booleans, `017` as octal 15,
    `1:30` as 90 (base 60) and `2024-01-01` as a date: the value the admin typed is silently changed. The
    YAML 1.2 core schema only knows true/false, null, decimal/0o/0x integers and plain floats; everything
    else is text. (PyYAML, already a dependency, with its resolvers replaced: no second YAML library.)
    """
    import yaml

    class CoreLoader(yaml.SafeLoader):
        pass

    CoreLoader.yaml_implicit_resolvers = {}
    resolvers = [
        ("bool", r"true|True|TRUE|false|False|FALSE", "tTfF"),
        ("int", r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+", "-+0123456789"),
        (
            "float",
            r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)",
            "-+0123456789.",
        ),
        ("null", r"~|null|Null|NULL|", ["~", "n", "N", ""]),
        ("merge", r"<<", "<"),
    ]
    for kind, pattern, first in resolvers:
        CoreLoader.add_implicit_resolver(f"tag:yaml.org,2002:{kind}", re.compile(f"^(?:{pattern})$"), list(first))

    def construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
        text = str(loader.construct_scalar(node))
        sign, digits = (-1, text[1:]) if text.startswith("-") else (1, text.lstrip("+"))
        base = 8 if digits.startswith("0o") else 16 if digits.startswith("0x") else 10
        return sign * int(digits[2:] if base != 10 else digits, base)

    def construct_float(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> float:
        text = str(loader.construct_scalar(node)).lower()
        return float(text.replace(".inf", "inf").replace(".nan", "nan"))

    CoreLoader.add_constructor("tag:yaml.org,2002:int", construct_int)
    CoreLoader.add_constructor("tag:yaml.org,2002:float", construct_float)
    return CoreLoader


def _field_annotation(parts: Sequence[str | int]) -> tuple[Any, type[BaseModel] | None]:
    """The type the model declares at a config path (and the model holding it), or (None, None) if unknown."""
    model: type[BaseModel] | None = IntegrationConfig
    annotation: Any = IntegrationConfig
    holder: type[BaseModel] | None = None
    for part in parts:
        if isinstance(part, int):
            args = [a for a in getattr(annotation, "__args__", ()) if a is not type(None)]
            lists = [a for a in args if getattr(a, "__origin__", None) is list] or (
                [annotation] if getattr(annotation, "__origin__", None) is list else []
            )
            if not lists or not getattr(lists[0], "__args__", ()):
                return None, None
            annotation = lists[0].__args__[0]
            model = _inner_model(annotation)
            continue
        if model is None:
            return None, None
        fields = {(f.alias or name): f for name, f in model.model_fields.items()}
        if part not in fields:
            return None, None
        holder, annotation = model, fields[part].annotation
        model = _inner_model(annotation)
    return annotation, holder


def _takes_text(annotation: Any) -> bool:
    """True where the schema expects text: str, an optional str, or a choice among texts (Literal)."""
    if annotation is str:
        return True
    if getattr(annotation, "__origin__", None) is Literal:
        return all(isinstance(a, str) for a in annotation.__args__)
    args = [a for a in getattr(annotation, "__args__", ()) if a is not type(None)]
    return bool(args) and getattr(annotation, "__origin__", None) is not list and any(_takes_text(a) for a in args)


def _settle_scalars(node: Any, parts: list[str | int], problems: list[Problem]) -> None:
    """Where the schema expects text, a plain (unquoted) scalar is the text as typed: `equals: 1` is "1",
    `tag: 2024` the tag "2024". A yes/no word in a sync condition is refused: it may mean the text (`NO`
    for Norway) as well as Efficy's yes/no "1"/"0", and guessing either way changes who is synced."""
    import yaml

    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            _settle_scalars(value_node, [*parts, str(key_node.value)], problems)
        return
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _settle_scalars(item, [*parts, i], problems)
        return
    if not isinstance(node, yaml.ScalarNode) or node.style is not None:
        return  # quoted (or a block scalar): text already
    annotation, holder = _field_annotation(parts)
    last_name = next((p for p in reversed(parts) if isinstance(p, str)), None)
    in_condition = holder is SyncCondition and last_name in _CONDITION_VALUES
    if in_condition and annotation is not None and _YES_NO_WORDS.match(node.value):
        path = _path(parts)
        problems.append(
            Problem(
                path,
                f"found {node.value} without quotes; YAML may read it as yes/no instead of the text {node.value}: "
                f"write '{node.value}' (in quotes) to compare with that text, or 1 / 0 for an Efficy yes/no field",
                found=node.value,
                allowed="quoted text, or a number",
                line=node.start_mark.line + 1,
            )
        )
        node.tag = _STR_TAG
    elif node.tag not in (_STR_TAG, "tag:yaml.org,2002:null") and annotation is not None and _takes_text(annotation):
        node.tag = _STR_TAG  # the constructor then takes the scalar's source text


def _parse_yaml(text: str) -> tuple[Any, dict[str, int], list[Problem]]:
    """Reads with YAML 1.2 core rules, text positions taking the text typed; see `_core_loader`."""
    import yaml

    loader = _core_loader()(text)
    try:
        root = loader.get_single_node()
        lines: dict[str, int] = {}
        problems: list[Problem] = []
        if root is not None:
            _index_nodes(root, "", lines, problems)
            _settle_scalars(root, [], problems)
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        where = f", column {mark.column + 1}" if mark else ""
        what = getattr(exc, "problem", None) or str(exc)
        return None, {}, [Problem("(file)", f"not valid YAML: {what}{where}", line=line)]
    except RecursionError:  # thousands of nested brackets: no config nests that deep
        return None, {}, [Problem("(file)", "not a config: nested too deeply")]
    finally:
        loader.dispose()
    return data, lines, problems


# --- load, dump, schema ---------------------------------------------------------------------------------------


def config_from_dict(data: Any, *, _lines: Mapping[str, int] | None = None) -> IntegrationConfig:
    """Validates already-parsed data (e.g. a stored version); raises ConfigError with every problem."""
    if not isinstance(data, Mapping):
        raise ConfigError([_problem("(root)", data, "a mapping with integration_id, efficy, apsis, ...")])
    try:
        config = IntegrationConfig.model_validate(dict(data))
    except ValidationError as exc:
        problems = refused_problems(data, exc)
    else:
        problems = cross_check(data)
        if not problems:
            from .entry_checks import entry_problems  # validate and apply only: a stored version loads without them

            problems = entry_problems(config)
    if problems:
        lines = _lines or {}
        placed = [Problem(p.path, p.message, p.found, p.allowed, p.line or _line_for(p.path, lines)) for p in problems]
        raise ConfigError(sorted(placed, key=lambda p: p.line or 0))
    return config


def refused_problems(data: Mapping[str, Any], exc: ValidationError) -> list[Problem]:
    """Every problem of `data`, which the model refused with `exc`, each with its path (also what the config
    store reports of a stored version it cannot load)."""
    refused = exc.errors()
    problems = [p for e in refused if (p := _from_pydantic(e)) is not None] + cross_check(data)
    if problems:
        return problems
    # the model's own cross-check saw what the raw data's did not: say it
    return [
        Problem(_path(e["loc"]) or "(config)", str((e.get("ctx") or {}).get("problems", e["msg"]))) for e in refused
    ]


#: the first part of every secret name, the stack's `SecretsPrefix` parameter (template.yaml); one per stack
#: keeps the stacks of one account from reading each other's secrets
DEFAULT_SECRETS_PREFIX = "efficy-sync"
#: the kind of each secret, the last part of its name: the functions' IAM policies grant each function only the
#: kinds it reads, by name (`<SecretsPrefix>/*/<kind>` in template.yaml), so a secret named otherwise cannot be read
SECRET_KINDS = {
    ("efficy", "api_key_secret"): "efficy",
    ("efficy", "webhook_secret_secret"): "webhook",
    ("apsis", "credentials_secret"): "apsis",
    ("apsis", "optout_token_secret"): "apsis-optout",
}


def secret_name_problems(
    data: Any, lines: Mapping[str, int] | None = None, *, prefix: str = DEFAULT_SECRETS_PREFIX
) -> list[Problem]:
    """Secret names outside the convention `<prefix>/<integration>/<kind>` the deployed functions may read.

    Checked on the files admins apply (not on the model): a name the IAM policies do not cover would pass
    validation and then fail every call with AccessDenied.
    """
    problems: list[Problem] = []
    for (section, field), kind in SECRET_KINDS.items():
        block = data.get(section) if isinstance(data, Mapping) else None
        name = block.get(field) if isinstance(block, Mapping) else None
        if not isinstance(name, str) or not _SECRET_NAME.match(name):
            continue  # missing or malformed: the model reports it
        if re.fullmatch(rf"{re.escape(prefix)}/[^/]+(?:/[^/]+)*/{re.escape(kind)}", name) is None:
            path = f"{section}.{field}"
            allowed = f"a name of the form {prefix}/<integration>/{kind}"
            problems.append(
                Problem(
                    path,
                    f"found {name!r}; allowed: {allowed} (the functions may only read secrets named so; "
                    f"see template.yaml)",
                    found=repr(name),
                    allowed=allowed,
                    line=_line_for(path, lines or {}),
                )
            )
    return problems


def load_config_text(text: str, *, secrets_prefix: str | None = DEFAULT_SECRETS_PREFIX) -> IntegrationConfig:
    """Parses and validates a YAML (or JSON) config; raises ConfigError listing every problem with its path.
    `secrets_prefix`: the deployed stack's SecretsPrefix, which every secret name must start with (None: not
    checked here, for a caller that learns the prefix from AWS only once the file is known to be valid)."""
    data, lines, problems = _parse_yaml(text)
    if secrets_prefix is not None:
        problems += secret_name_problems(data, lines, prefix=secrets_prefix)
    if problems and data is None:
        raise ConfigError(problems)
    try:
        config = config_from_dict(data, _lines=lines)
    except ConfigError as exc:
        raise ConfigError(sorted(problems + exc.problems, key=lambda p: p.line or 0)) from None
    if problems:
        raise ConfigError(problems)
    return config


def load_config_file(path: str | Path) -> IntegrationConfig:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem("(file)", f"cannot read {path}: {exc}")]) from None
    return load_config_text(text)


def config_to_yaml(config: IntegrationConfig, *, only_set: bool = False) -> str:
    """What `config show` prints and `config apply` takes back unchanged. `only_set`: the settings the config
    sets (as a stored version holds them), not the defaults of the others."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        # PyYAML quotes yes/no/on/off but not y/n, which the loader refuses unquoted in a condition
        style = "'" if _YES_NO_WORDS.match(value) else None
        return dumper.represent_scalar(_STR_TAG, value, style=style)

    Dumper.add_representer(str, text)
    return yaml.dump(
        config_to_dict(config, only_set=only_set),
        Dumper=Dumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
    )


def json_schema() -> dict[str, Any]:
    """JSON Schema for editors (YAML language servers read it)."""
    schema = IntegrationConfig.model_json_schema(by_alias=True)
    return {**schema, "$schema": "https://json-schema.org/draft/2020-12/schema", "title": "efficy-sync integration"}
