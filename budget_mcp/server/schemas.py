"""The JSON schemas an agent reads with every `tools/list`, kept short without losing meaning.

pydantic's schemas carry a title on every property and spell an optional value as `anyOf` with
null; an agent needs neither. Output schemas keep their structure and types, not their prose or
required lists: the results explain themselves by name, and the tool's description says what
comes back.
"""

from typing import Any

_NULL = {"type": "null"}


def compact_tool_schema(schema: dict[str, Any], *, descriptions: bool = True) -> dict[str, Any]:
    """A tool's input or output schema, compacted, with its enumerations written in place of references."""
    definitions = schema.get("$defs", {})
    enums = {f"#/$defs/{name}": {"enum": d["enum"]} for name, d in definitions.items() if "enum" in d}
    inlined = _inline(schema, enums)
    kept = {name: d for name, d in definitions.items() if f"#/$defs/{name}" not in enums}
    out: dict[str, Any] = compact({**inlined, "$defs": _inline(kept, enums)}, descriptions=descriptions)
    if not kept:
        out.pop("$defs")
        return out
    return _extending(out, out["$defs"])


def _extending(schema: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    """Each object whose properties include all of a definition's, as `allOf` that definition plus the rest
    (a budget status repeats every field of a limit's status)."""
    shared = [(name, d["properties"]) for name, d in definitions.items() if len(d.get("properties", {})) >= 5]

    def extend(node: dict[str, Any], own: str | None) -> dict[str, Any]:
        properties = node.get("properties", {})
        for name, base in shared:
            if name != own and all(properties.get(k) == v for k, v in base.items()):
                rest = {k: v for k, v in properties.items() if k not in base}
                return {"allOf": [{"$ref": f"#/$defs/{name}"}], **{k: v for k, v in node.items() if k != "properties"},
                        "properties": rest}  # fmt: skip
        return node

    out = extend(schema, None)
    out["$defs"] = {name: extend(d, name) for name, d in definitions.items()}
    return out


def _inline(node: Any, enums: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_inline(item, enums) for item in node]
    if not isinstance(node, dict):
        return node
    if node.get("$ref") in enums:
        return {**enums[node["$ref"]], **{k: v for k, v in node.items() if k != "$ref"}}
    options = node.get("anyOf")
    if isinstance(options, list) and len(options) == 2 and _NULL in options:
        other = options[0] if options[1] == _NULL else options[1]
        if other.get("$ref") in enums:
            rest = {k: _inline(v, enums) for k, v in node.items() if k not in {"anyOf", "$defs"}}
            return {"enum": [*enums[other["$ref"]]["enum"], None], **rest}
    return {k: _inline(v, enums) for k, v in node.items() if k != "$defs"}


def compact(schema: Any, *, descriptions: bool = True, nested: bool = False) -> Any:
    """`schema` without titles or null defaults, optional types as `["integer", "null"]`; without `descriptions`,
    no prose, required lists, formats, item types of lists of strings or `"type": "object"` beside properties
    (for output schemas: every field a result holds stays named, and nothing a result may hold is refused)."""
    if isinstance(schema, list):
        return [compact(item, descriptions=descriptions, nested=True) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if (key == "title" and isinstance(value, str)) or (key == "default" and value is None):
            continue
        if key in {"description", "required", "default", "format"} and not descriptions:
            continue
        if key == "type" and value == "object" and "properties" in schema and not descriptions and nested:
            continue  # an output's inner objects are plain by their properties (the SDK needs the outer one's)
        if key == "items" and value == {"type": "string"} and not descriptions:
            continue  # an output's lists of text (warnings, models) say so by their names
        if key == "additionalProperties" and value is True:
            continue
        if key == "properties":
            out[key] = {name: compact(field, descriptions=descriptions, nested=True) for name, field in value.items()}
        else:
            out[key] = compact(value, descriptions=descriptions, nested=True)
    options = out.get("anyOf")
    if isinstance(options, list) and len(options) == 2 and _NULL in options:
        other = options[0] if options[1] == _NULL else options[1]
        if isinstance(other.get("type"), str | list) and "$ref" not in other:
            kinds = other["type"] if isinstance(other["type"], list) else [other["type"]]
            out = {**other, **{k: v for k, v in out.items() if k != "anyOf"}, "type": [*kinds, "null"]}
    return out
