"""The base every wire model shares: unknown fields kept, secrets masked in repr() but intact in model_dump()."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, ValidationError

MASK = "********"
# Keys whose values are masked wherever a free-form dict of credentials is printed.
SECRET_KEYS = frozenset({"password", "api_key", "apikey", "tenant_secret", "secret", "token"})


def mask_secrets(value: Any) -> Any:
    """A copy of a JSON-like value with every secret-named entry replaced by the mask."""
    if isinstance(value, dict):
        return {k: (MASK if str(k).lower() in SECRET_KEYS and v else mask_secrets(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_secrets(v) for v in value]
    return value


class WireModel(BaseModel):
    model_config = ConfigDict(extra="allow")

    # Field names printed as the mask by repr()/str() when they hold a value.
    _secret_fields: ClassVar[frozenset[str]] = frozenset()

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            secret = name is not None and (name in self._secret_fields or name.lower() in SECRET_KEYS)
            yield name, (MASK if secret and value else mask_secrets(value))

    def masked(self) -> Self:
        """A copy safe to show, the service's responses included: every secret-named value, at any depth and
        in unknown fields too, replaced by the mask."""
        data = mask_secrets(self.model_dump(mode="json"))
        for name in self._secret_fields:
            if data.get(name):
                data[name] = MASK
        return self.model_validate(data)


def describe_validation_error(exc: ValidationError, prefix: str = "", *, limit: int = 3) -> str:
    """Where and what, without the offending input (it may be a password): `input.source.topic: Field required`.
    With prefix "spec": `spec.input.source.topic: ...`, and `spec: ...` for the object as a whole."""
    return describe_errors(exc.errors(include_input=False, include_url=False), prefix, limit=limit)


def describe_errors(errors: Sequence[Mapping[str, Any]], prefix: str = "", *, limit: int = 3,
                    drop_first: str | None = None) -> str:
    """The same for errors already listed (FastAPI's). `drop_first` drops a leading location part that says
    nothing to the reader (FastAPI's "body"). Only `loc` and `msg` are read: an error's `input` is never shown."""
    parts = []
    for error in errors[:limit]:
        loc = [str(p) for p in error.get("loc", ())]
        if loc and loc[0] == drop_first:
            loc = loc[1:]
        where = ".".join([prefix, *loc] if prefix else loc)
        parts.append(f"{where or 'body'}: {error.get('msg', 'invalid')}")
    more = f" (and {len(errors) - limit} more)" if len(errors) > limit else ""
    return "; ".join(parts) + more
