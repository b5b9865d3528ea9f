"""A published model's input schema: which fields of a record are its features, and their types.

Schemas arrive as the v3 clients sent them, Spark's StructType in JSON:
`{"type": "struct", "fields": [{"name": "tweet", "type": "string", "nullable": false, "metadata": {}}]}`.
Only flat schemas of scalar types are accepted: a stream record is one JSON object, and each feature is one of
its fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Spark's names (and the usual aliases) for the JSON types a record's field can have.
_TYPES = {
    "string": "string", "str": "string", "text": "string",
    "integer": "integer", "int": "integer", "long": "integer", "short": "integer", "byte": "integer",
    "bigint": "integer",
    "double": "double", "float": "double", "number": "double", "decimal": "double",
    "boolean": "boolean", "bool": "boolean",
    # numpy's, as the v3 clients wrote them into `training_data_schema`
    "int8": "integer", "int16": "integer", "int32": "integer", "int64": "integer", "uint8": "integer",
    "uint16": "integer", "uint32": "integer", "uint64": "integer", "float16": "double", "float32": "double",
    "float64": "double", "bool_": "boolean", "str_": "string", "unicode": "string",
}
MAX_FIELDS = 10_000


class SchemaError(ValueError):
    """The schema does not parse; the message says where."""


@dataclass(frozen=True)
class SchemaField:
    name: str
    type: str  # string, integer, double or boolean


@dataclass(frozen=True)
class InputSchema:
    fields: tuple[SchemaField, ...]

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    @property
    def one_text(self) -> bool:
        """One string feature: the model takes a 1-D list of strings (scikit-learn's text vectorizers)."""
        return len(self.fields) == 1 and self.fields[0].type == "string"

    def to_json(self) -> dict[str, Any]:
        return {"type": "struct", "fields": [{"name": f.name, "type": f.type, "nullable": False, "metadata": {}}
                                             for f in self.fields]}


def parse_schema(raw: Any) -> InputSchema:
    """The schema, or SchemaError naming the first thing wrong with it."""
    if not isinstance(raw, Mapping):
        raise SchemaError("input_data_schema must be an object: {\"type\": \"struct\", \"fields\": [...]}")
    if raw.get("type", "struct") != "struct":
        raise SchemaError(f"input_data_schema.type must be \"struct\", not {_show(raw.get('type'))}")
    fields = raw.get("fields")
    if not isinstance(fields, list) or not fields:
        raise SchemaError("input_data_schema.fields must be a non-empty list of {\"name\", \"type\"}")
    if len(fields) > MAX_FIELDS:
        raise SchemaError(f"input_data_schema.fields has {len(fields)} fields; at most {MAX_FIELDS}")
    parsed: list[SchemaField] = []
    seen: set[str] = set()
    for i, field in enumerate(fields):
        where = f"input_data_schema.fields[{i}]"
        if not isinstance(field, Mapping):
            raise SchemaError(f"{where} must be an object with `name` and `type`")
        name = field.get("name")
        if not isinstance(name, str) or not name:
            raise SchemaError(f"{where}.name must be a non-empty string")
        if name in seen:
            raise SchemaError(f"{where}.name: `{name[:100]}` appears twice")
        seen.add(name)
        kind = field.get("type")
        canonical = _TYPES.get(kind.lower()) if isinstance(kind, str) else None
        if canonical is None:
            raise SchemaError(f"{where}.type {_show(kind)} is not supported: use string, integer, long, double, "
                              "float or boolean")
        parsed.append(SchemaField(name, canonical))
    return InputSchema(tuple(parsed))


def declared_schema(meta: Mapping[str, Any]) -> Any:
    """The schema a model declares: `input_data_schema`, else the features of `training_data_schema` (the v3
    Python client sends only the latter for scikit-learn: `{"features": {"type", "fields"}, "labels": ...}`)."""
    if meta.get("input_data_schema") is not None:
        return meta["input_data_schema"]
    training = meta.get("training_data_schema")
    if isinstance(training, Mapping) and isinstance(training.get("features"), Mapping):
        return {"type": "struct", "fields": training["features"].get("fields")}
    return None


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# What a record's value must be for each type. bool is an int in Python: it is only a boolean here.
def accepts(kind: str, value: Any) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, int | float) and not isinstance(value, bool)  # double
