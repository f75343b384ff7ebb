"""JSON for any machine: its declared input and output types, checked by pydantic.

Theory of operation
-------------------
A machine declares its types once, through its generic base
(``class Bank(Machine[BankState, BankInput, BankOutput])``) or, where
generics are not enough, with class attributes ``input_type`` and
``output_type``. :func:`declared_types` reads them (walking the MRO and
substituting type variables of generic intermediate bases), and
:class:`MachineCodec` builds one ``pydantic.TypeAdapter`` per direction at
start-up, so that a type pydantic cannot serve fails then, in one line, and
no request pays for building anything.

The wire convention (docs/serving.md): a dataclass is a JSON object of its
``__init__`` fields plus ``"type"``, the class name. Where the declared type
is a union of dataclasses (``Deposit | Withdraw``) ``"type"`` picks the
class, so it is required there; elsewhere it may be left out, and when given
it must name the class. Outputs always carry it. Dataclasses nested in the
fields of those dataclasses follow the same rule. Unknown fields are refused,
values are not coerced (``"5"`` is not an int: pydantic's strict mode) and
``bytes`` travel as base64 strings.

pydantic reads more than JSON proper, and its reader keeps the last of two
equal keys: :class:`JsonCodec` refuses what it lets through. A declared
float refuses NaN, Infinity and a number beyond a float's range (which
pydantic reads as infinite); a value of type ``Any`` is walked for them; a
key repeated in an object is found by counting (see :meth:`JsonCodec.decode`).
An output that holds a NaN is an :class:`OutputMismatch`, never the ``null``
pydantic would write, and so is one holding an integer longer than any of
our readers reads (:data:`~corosm.frontends.jsonchecks.MAX_DIGITS`). The
checks themselves, and what each costs, are in :mod:`corosm.frontends.jsonchecks`;
this module decides which of them a declared type needs.

How: :class:`_WireTypes` rewrites the declared type. Each dataclass becomes
a ``TypedDict`` mirror of its fields (``extra="forbid"``, an optional
``Literal`` ``"type"``), validated in pydantic's JSON mode and then passed to
the class's own ``__init__`` (so ``__post_init__`` checks run, and their
errors are 400s too); its serializer turns an instance back into that
mirror. Each union holding dataclasses becomes a pydantic tagged union with
a callable ``Discriminator`` that reads ``"type"``, so the user's classes
need no ``Literal`` field. Validation stays in JSON mode throughout (a
``BeforeValidator`` that dropped ``"type"`` would not: pydantic then checks
Python values, and strict mode refuses a JSON array for a tuple).

:func:`format_errors` turns pydantic's errors into short lines that name the
field path and what was expected: ``amount: expected an integer, got "x"``.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import datetime
import decimal
import enum
import json
import math
import types
import typing
import uuid
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from typing import Any, Literal, NotRequired, Required, TypeVar

import pydantic
import pydantic_core
import typing_extensions
from pydantic import (
    AfterValidator,
    ConfigDict,
    Discriminator,
    PlainSerializer,
    Tag,
    TypeAdapter,
    ValidationInfo,
)

from corosm.core.machine import Machine
from corosm.errors import UsageError
from corosm.frontends.jsonchecks import (
    FINITE,
    MAX_DIGITS,
    cut,
    keys_in,
    non_finite,
    non_finite_in,
    strict_problem,
    too_long_integer,
    written,
)

TYPE_KEY = "type"
_TAG = "type="  # prefix of our union tags, so that error paths can drop them
_REST = _TAG + "*"  # the tag of a union's members that are not dataclasses
_CONFIG = ConfigDict(
    extra="forbid",
    ser_json_bytes="base64",
    val_json_bytes="base64",
    allow_inf_nan=False,  # a declared float is finite
    ser_json_inf_nan="constants",  # written as NaN, so that encode sees it and refuses it
)
# The same settings for the writer: pydantic reads its ser_json_* settings from the top-level
# config alone, which a TypeAdapter of a TypedDict (a lone dataclass's mirror) may not be given.
_WRITER_CONFIG = pydantic_core.CoreConfig(ser_json_bytes="base64", ser_json_inf_nan="constants")
_MAX_SHOWN_ERRORS = 10
# Leaf types that can hold no JSON object and no NaN (pydantic refuses a non-finite Decimal).
_SCALARS: tuple[Any, ...] = (str, int, bool, bytes, None, type(None), decimal.Decimal, uuid.UUID)
_SCALARS += (datetime.datetime, datetime.date, datetime.time, datetime.timedelta)
_RAW = (Any, object, dict, list, tuple)  # leaf types that pydantic hands over as parsed JSON
# Type constructors used on values built at run time (typed Any for mypy's sake).
_Union: Any = typing.Union
_Literal: Any = Literal
_TypedDict: Any = typing_extensions.TypedDict  # pydantic needs this one on Python 3.11


class InvalidJson(UsageError):
    """A body that is not JSON or not a valid value of the declared type.

    ``problems`` holds one short line per error, each naming the field path
    and what was expected.
    """

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(self.problems))


class OutputMismatch(UsageError):
    """A machine returned a value that its declared output type does not allow."""


# -- the declared types --------------------------------------------------------------


AnyMachine = Machine[Any, Any, Any]


def declared_types(machine: AnyMachine | type[AnyMachine]) -> tuple[Any, Any]:
    """The machine's (input type, output type): its attributes, else its generic base.

    Raises :class:`UsageError` when the machine declares neither.
    """
    cls = machine if isinstance(machine, type) else type(machine)
    args = _machine_args(cls)
    found: list[Any] = []
    for position, attribute in ((1, "input_type"), (2, "output_type")):
        explicit = getattr(cls, attribute, None)
        if explicit is not None:
            found.append(explicit)
        elif args is not None:
            found.append(args[position])
        else:
            raise UsageError(
                f"{cls.__qualname__} does not declare its types: subclass "
                f"Machine[State, Input, Output] (e.g. class {cls.__name__}(Machine[dict[str, int], "
                f"Deposit | Withdraw, int])) or set the class attributes input_type and output_type"
            )
    return found[0], found[1]


def _machine_args(cls: type) -> tuple[Any, ...] | None:
    """``(S, I, O)`` from the generic base ``Machine[S, I, O]``, through generic subclasses."""
    for base in cls.__dict__.get("__orig_bases__", cls.__bases__):
        origin = typing.get_origin(base) or base
        args = typing.get_args(base)
        if origin is Machine:
            return args if len(args) == 3 else None
        if isinstance(origin, type) and issubclass(origin, Machine):
            inner = _machine_args(origin)
            if inner is None:
                continue
            mapping = dict(zip(getattr(origin, "__parameters__", ()), args, strict=False))
            return tuple(_substitute(arg, mapping) for arg in inner)
    return None


def _substitute(tp: Any, mapping: Mapping[Any, Any]) -> Any:
    if isinstance(tp, TypeVar):
        return mapping.get(tp, tp)
    params = getattr(tp, "__parameters__", ())
    if params and typing.get_origin(tp) is not None:
        return tp[tuple(mapping.get(p, p) for p in params)]
    return tp


# -- the wire types ------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    return getattr(tp, "__qualname__", None) or repr(tp)


def _is_dataclass_type(tp: Any) -> bool:
    origin = typing.get_origin(tp) or tp
    return isinstance(origin, type) and dataclasses.is_dataclass(origin)


class _WireTypes:
    """Rewrites a declared type into the type pydantic validates (see the module docs)."""

    def __init__(self, where: str) -> None:
        self.where = where  # e.g. "Ledger's input type", for messages
        self._mirrors: dict[Any, Any] = {}
        self._building: list[Any] = []
        # What JsonCodec must check beyond pydantic (see JsonCodec): a declared float (its
        # outputs), a raw value (Any: walked), a type whose objects' keys are not all counted.
        self.floats = False
        self.raw = False
        self.uncounted = False
        self.objects = 0  # places where a JSON object may stand: counted ones, and others

    def rewrite(self, tp: Any) -> Any:
        if isinstance(tp, TypeVar):
            raise UsageError(
                f"{self.where} is the unbound type variable {tp.__name__}: give a concrete "
                "type in Machine[State, Input, Output] or set input_type/output_type"
            )
        if _is_dataclass_type(tp):
            self.objects += 1
            return self._dataclass(tp)
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin is typing.Union or origin is types.UnionType:
            return self._union(args)
        if origin is typing.Annotated:
            return typing.Annotated[(self.rewrite(args[0]), *tp.__metadata__)]
        if origin is None or origin is Literal or not args:
            return self._leaf(tp, origin)
        rewritten = tuple(arg if arg is Ellipsis else self.rewrite(arg) for arg in args)
        if origin is Callable or not hasattr(origin, "__class_getitem__"):
            self.uncounted = True
            return tp  # pydantic will say what it makes of it
        if any(map(_walked, rewritten)) and all(
            _walked(new) or new == old for new, old in zip(rewritten, args, strict=True)
        ):
            return typing.Annotated[tp, _WALK]  # plain JSON (dict[str, Any]): one walk of it all
        wire = tp if rewritten == args else origin[rewritten]
        if isinstance(origin, type) and issubclass(origin, collections.abc.Mapping):
            self.objects += 1
            return typing.Annotated[wire, _COUNT_KEYS]
        return wire

    def _leaf(self, tp: Any, origin: Any) -> Any:
        if tp is float:
            self.floats = True
        elif origin is Literal or any(tp is scalar for scalar in _SCALARS):
            pass
        elif isinstance(tp, type) and issubclass(tp, enum.Enum):
            pass  # its values are the members', no object, no NaN pydantic would not refuse
        elif any((origin or tp) is raw for raw in _RAW):
            self.raw = True
            self.objects += 1
            return typing.Annotated[tp, _WALK]
        else:  # a class pydantic reads its own way (a BaseModel, a TypedDict...)
            self.uncounted = True
            self.objects += 1
        return tp

    def _union(self, members: tuple[Any, ...]) -> Any:
        classes = [m for m in members if _is_dataclass_type(m)]
        if not classes:
            return self._smart_union(members)
        names = [_class_name(c) for c in classes]
        for name in names:
            if names.count(name) > 1:
                raise UsageError(
                    f"{self.where} joins two classes named {name} in one union: the wire's "
                    f'"type" names a class by its name alone, so rename one of them'
                )
        choices = [typing.Annotated[self.rewrite(c), Tag(_TAG + _class_name(c))] for c in classes]
        rest = [m for m in members if not _is_dataclass_type(m)]
        if rest:
            choices.append(typing.Annotated[self._smart_union(rest), Tag(_REST)])
        tagged = _Union[tuple(choices)]
        which = _discriminator(frozenset(names), single=len(classes) == 1, rest=bool(rest))
        # A missing or unknown "type" is one error of ours; its message lists the names.
        discriminator = Discriminator(
            which,
            custom_error_type="corosm_type",
            custom_error_message=", ".join(f'"{name}"' for name in names),
        )
        return typing.Annotated[tagged, discriminator]

    def _smart_union(self, members: Iterable[Any]) -> Any:
        """A union pydantic tries member by member (a tagged union tries one).

        A member that fails may have counted the keys of objects it read
        before another member reads them again: where two members could
        hold objects, the count is not to be trusted.
        """
        rewritten = []
        holders = 0
        for member in members:
            before = self.objects
            rewritten.append(self.rewrite(member))
            holders += self.objects > before
        if holders > 1:
            self.uncounted = True
        return _Union[tuple(rewritten)]

    def _dataclass(self, tp: Any) -> Any:
        mirror = self._mirrors.get(tp)
        if mirror is not None:
            return mirror
        if tp in self._building:
            raise UsageError(
                f"{self.where}: the dataclass {_type_name(tp)} contains itself, which this JSON "
                "codec does not support; declare a non-recursive type"
            )
        self._building.append(tp)
        try:
            mirror = self._mirrors[tp] = self._mirror(tp)
        finally:
            self._building.pop()
        return mirror

    def _mirror(self, tp: Any) -> Any:
        cls: type = typing.get_origin(tp) or tp
        name = _class_name(cls)
        try:
            hints = typing.get_type_hints(cls, include_extras=True)
        except Exception as exc:
            raise UsageError(
                f"{self.where}: cannot resolve the field types of {cls.__qualname__} "
                f"({type(exc).__name__}: {exc}); import the names its annotations use"
            ) from exc
        init_only = [name for name, hint in hints.items() if isinstance(hint, dataclasses.InitVar)]
        if init_only:
            raise UsageError(
                f"{self.where}: {cls.__qualname__} has the InitVar {init_only[0]!r}, which is no "
                "field of the object and so has no place in its JSON; make it a field"
            )
        mapping = dict(zip(getattr(cls, "__parameters__", ()), typing.get_args(tp), strict=False))
        fields: dict[str, Any] = {}
        init_fields = [f for f in dataclasses.fields(cls) if f.init]
        for field in init_fields:
            if field.name == TYPE_KEY:
                raise UsageError(
                    f'{self.where}: {cls.__qualname__} has a field named "{TYPE_KEY}", which the '
                    "JSON convention uses for the class name; rename the field"
                )
            wire = self.rewrite(_substitute(hints[field.name], mapping))
            optional = (
                field.default is not dataclasses.MISSING
                or field.default_factory is not dataclasses.MISSING
            )
            fields[field.name] = NotRequired[wire] if optional else Required[wire]
        fields[TYPE_KEY] = NotRequired[_Literal[name]]
        mirror = _TypedDict(name, fields)
        mirror.__pydantic_config__ = _CONFIG
        names = tuple(f.name for f in init_fields)
        return typing.Annotated[
            mirror,
            AfterValidator(_builder(cls, name)),
            PlainSerializer(_fields_of(cls, name, names), return_type=mirror),
        ]


def _walked(wire: Any) -> bool:
    """Whether ``wire`` is a raw value, walked as a whole (see :func:`_walk`)."""
    return typing.get_origin(wire) is typing.Annotated and wire.__metadata__ == (_WALK,)


def _class_name(tp: Any) -> str:
    cls = typing.get_origin(tp) or tp
    return str(cls.__name__)


def _discriminator(
    names: frozenset[str], *, single: bool, rest: bool
) -> Callable[[Any], str | None]:
    """Which member of a union holding dataclasses a value is (the tag, or None)."""
    only = _TAG + next(iter(names)) if single else None

    def which(value: Any) -> str | None:
        if isinstance(value, dict):  # a JSON object, being validated
            name = value.get(TYPE_KEY)
            if isinstance(name, str):
                return _TAG + name  # an unknown name fails with the expected ones
            if name is not None:
                return None
            return only or (_REST if rest else None)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):  # an output
            return _TAG + type(value).__name__
        return _REST if rest else None

    return which


def _builder(cls: type, name: str) -> Callable[[dict[str, Any], ValidationInfo], Any]:
    def build(fields: dict[str, Any], info: ValidationInfo) -> Any:
        keys = info.context  # JsonCodec.decode's count of keys read
        if keys is not None:
            keys[0] += len(fields)
        fields.pop(TYPE_KEY, None)
        try:
            return cls(**fields)
        except Exception as exc:  # __post_init__ refusing the values: the client's error
            raise pydantic_core.PydanticCustomError(
                "corosm_init", "{message}", {"message": f"{name}: {_one_line(exc)}"}
            ) from None

    return build


def _count_keys(mapping: Mapping[Any, Any], info: ValidationInfo) -> Any:
    keys = info.context
    if keys is not None:
        keys[0] += len(mapping)
    return mapping


def _walk(value: Any, info: ValidationInfo) -> Any:
    """Check a raw value (parsed JSON): count its objects' keys, refuse a NaN or an infinity."""
    found = keys_in(value)
    if found < 0:  # format_errors says what and where
        raise pydantic_core.PydanticCustomError("corosm_non_finite", "a NaN or an infinity")
    keys = info.context
    if keys is not None:
        keys[0] += found
    return value


_COUNT_KEYS = AfterValidator(_count_keys)
_WALK = AfterValidator(_walk)


def _fields_of(cls: type, name: str, names: tuple[str, ...]) -> Callable[[Any], dict[str, Any]]:
    def fields(value: Any) -> dict[str, Any]:
        if not isinstance(value, cls):
            raise TypeError(f"expected {name}, got {type(value).__name__} {_repr(value)}")
        out = {TYPE_KEY: name}
        for field in names:
            out[field] = getattr(value, field)
        return out

    return fields


# -- codecs --------------------------------------------------------------------------


class JsonCodec:
    """One declared type: JSON bytes in (checked), values out as JSON bytes.

    pydantic's reader takes NaN, Infinity and numbers beyond a float's range
    (as infinite), and keeps the last of two equal keys in an object; JSON
    proper has neither. What each check costs, per request:

    * a declared float refuses non-finite numbers as it is validated
      (``allow_inf_nan``): nothing more;
    * a raw value (``Any``, ``object``, a bare ``list`` or ``dict``, or a
      container of them such as ``dict[str, Any]``) is walked for them once
      it is validated, counting its objects' keys;
    * repeated keys: every object read has its keys counted (a dataclass,
      a mapping, a raw value); when the body holds as many colons as that,
      no key can have come twice (each key has its colon, and a colon in
      a string only adds one). A type of strings, ints and dataclasses of
      them pays that count: a ``bytes.count`` of the body and an addition
      per object;
    * otherwise (a colon in a string, a class pydantic reads its own way, a
      union two of whose members could hold objects) the body is parsed
      again, strictly (:func:`~corosm.frontends.jsonchecks.strict_problem`).

    Outputs are written by pydantic: a type that could hold a float has its
    outputs searched for NaN (:func:`~corosm.frontends.jsonchecks.non_finite`),
    and an output longer than :data:`~corosm.frontends.jsonchecks.MAX_DIGITS`
    bytes has its long runs of digits measured
    (:func:`~corosm.frontends.jsonchecks.too_long_integer`).
    """

    def __init__(self, tp: Any, where: str) -> None:
        self.type = tp
        self.where = where
        wire_types = _WireTypes(where)
        wire = wire_types.rewrite(tp)
        self._uncounted = wire_types.uncounted
        self._scan_output = wire_types.floats or wire_types.raw or wire_types.uncounted
        try:
            self.adapter: TypeAdapter[Any] = _adapter(wire)
            # Called directly, not through the adapter's wrappers: less work per request.
            self._reader = self.adapter.validator
            self._writer = pydantic_core.SchemaSerializer(self.adapter.core_schema, _WRITER_CONFIG)
        except pydantic.PydanticSchemaGenerationError as exc:
            raise UsageError(
                f"{where} ({_type_name(tp)}) cannot be served as JSON: "
                f"{_first_line(exc).split('. ')[0]}; use dataclasses, unions and plain types "
                "(str, int, float, bool, None, list, tuple, dict, Literal, Enum, ...)"
            ) from exc
        except pydantic.PydanticUserError as exc:
            raise UsageError(
                f"{where} ({_type_name(tp)}) cannot be served as JSON: {_first_line(exc)}"
            ) from exc
        except (NameError, TypeError) as exc:
            raise UsageError(f"{where} ({_type_name(tp)}) cannot be served as JSON: {exc}") from exc

    def decode(self, body: bytes | str) -> Any:
        """The value ``body`` holds; :class:`InvalidJson` names every problem."""
        if isinstance(body, str):
            body = body.encode("utf-8", "surrogatepass")  # a lone surrogate: pydantic says so
        keys = [0]  # the keys of the objects read, counted by the validators
        try:
            value = self._reader.validate_json(body, strict=True, context=keys)
        except pydantic.ValidationError as exc:
            raise InvalidJson(format_errors(exc.errors(include_url=False), body)) from None
        if self._uncounted or body.count(b":") != keys[0]:
            problem = strict_problem(body)
            if problem is not None:
                raise InvalidJson([problem])
        return value

    def encode(self, value: Any) -> bytes:
        """``value`` as JSON; :class:`OutputMismatch` when the type does not allow it."""
        try:
            body = self._writer.to_json(value, warnings="error")
        except (pydantic_core.PydanticSerializationError, TypeError, ValueError):
            raise self._mismatch(value, "") from None
        if self._scan_output and non_finite(body):
            raise self._mismatch(value, " (JSON has no NaN or Infinity)")
        if len(body) > MAX_DIGITS and too_long_integer(body):
            raise self._mismatch(
                value,
                f" (an integer of more than {MAX_DIGITS} digits, which JSON readers such as "
                "pydantic's and Python's refuse)",
            )
        return body

    def _mismatch(self, value: Any, why: str) -> OutputMismatch:
        return OutputMismatch(
            f"{self.where} is {_type_name(self.type)}, which does not allow "
            f"{type(value).__name__} {_repr(value)}{why}"
        )

    def to_python(self, value: Any) -> Any:
        """``value`` as plain JSON-able Python (dicts, lists, str, int...)."""
        return self._writer.to_python(value, mode="json", warnings="error")


def _adapter(wire: Any) -> TypeAdapter[Any]:
    """A TypeAdapter with our config, unless the type brings its own (a mirror does)."""
    base = typing.get_args(wire)[0] if typing.get_origin(wire) is typing.Annotated else wire
    if typing_extensions.is_typeddict(base):
        return TypeAdapter(wire)
    return TypeAdapter(wire, config=_CONFIG)


class MachineCodec:
    """A machine's input and output codecs, built (and checked) once at start-up."""

    def __init__(self, machine: Machine[Any, Any, Any]) -> None:
        name = type(machine).__qualname__
        input_type, output_type = declared_types(machine)
        self.input = JsonCodec(input_type, f"{name}'s input type")
        self.output = JsonCodec(output_type, f"{name}'s output type")


# -- the client's side ---------------------------------------------------------------


@lru_cache(maxsize=256)
def codec_for(tp: Any) -> JsonCodec:
    """A cached codec for ``tp`` (the client encodes and decodes with these)."""
    return JsonCodec(tp, f"the type {_type_name(tp)}")


def to_json_value(value: Any) -> Any:
    """``value`` as JSON-able Python, dataclasses by the wire convention (``"type"`` tagged)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return codec_for(type(value)).to_python(value)
    if isinstance(value, list | tuple):
        return [to_json_value(item) for item in value]
    if isinstance(value, dict):
        return {key: to_json_value(item) for key, item in value.items()}
    return pydantic_core.to_jsonable_python(value, bytes_mode="base64")


def dumps(value: Any) -> bytes:
    """``value`` as compact JSON bytes (see :func:`to_json_value`).

    A NaN or an infinity anywhere in ``value`` is a ``ValueError`` naming where
    (JSON has none, and the server refuses them). It is looked for in
    ``value`` itself, before any conversion: how pydantic writes one depends
    on its settings (``null`` is one of them), and ``json.dumps`` would say
    only that there is one.
    """
    where = non_finite_in(value, "")
    if where is not None:
        raise ValueError(f"{where}; expected a finite number (JSON has no NaN or Infinity)")
    text = json.dumps(
        to_json_value(value), separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return text.encode()


# -- errors --------------------------------------------------------------------------

_EXPECTED = {
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "string_type": "a string",
    "bool_type": "true or false",
    "none_required": "null",
    "list_type": "an array",
    "tuple_type": "an array",
    "set_type": "an array",
    "frozen_set_type": "an array",
    "dict_type": "an object",
    "model_type": "an object",
    "dataclass_type": "an object",
    "bytes_type": "a base64 string",
    "finite_number": FINITE,
}


_SURROGATES = (
    "expected a \\u escape from \\ud800 to \\udbff to be followed by one "
    "from \\udc00 to \\udfff (a surrogate pair), and neither alone"
)


def format_errors(errors: Iterable[Mapping[str, Any]], body: bytes | None = None) -> list[str]:
    """One short line per pydantic error: the field path, what was expected, what came.

    Given the ``body`` they came from, a number pydantic read as infinite is
    shown as the body wrote it (``1e400``, not ``Infinity``).
    """
    lines = [_error_line(error, body) for error in errors]
    if len(lines) > _MAX_SHOWN_ERRORS:
        hidden = len(lines) - _MAX_SHOWN_ERRORS
        lines = [*lines[:_MAX_SHOWN_ERRORS], f"... and {hidden} more"]
    return lines


def _error_line(error: Mapping[str, Any], body: bytes | None) -> str:
    kind = error["type"]
    path = _path(error["loc"])
    value = error.get("input")
    if kind == "json_invalid":
        return f"the body is not JSON: {_json_reason(error)}"
    if kind == "missing":
        return f"{path}: missing"
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        return f"{path}: unknown field"
    if kind == "corosm_type":  # a union of dataclasses without a usable "type"
        names = error["msg"]
        if not isinstance(value, dict):
            wanted = f'expected an object with "{TYPE_KEY}" one of {names}'
            return _at(path, f"{wanted}, got {_shown(value)}")
        type_path = f"{path}.{TYPE_KEY}" if path else TYPE_KEY
        if TYPE_KEY not in value:
            return f"{type_path}: missing; expected one of {names}"
        return f"{type_path}: expected one of {names}, got {_shown(value[TYPE_KEY])}"
    if kind == "corosm_init":  # the class's own __init__ refused the values
        return _at(path, str(error["msg"]))
    if kind == "corosm_non_finite":  # in a raw value: where the body holds it
        problem = None if body is None else strict_problem(body)
        return problem or _at(path, f"expected {FINITE}, got a NaN or an infinity")
    got = _shown(value)
    if isinstance(value, float) and not math.isfinite(value) and body is not None:
        got = cut(written(body, error["loc"]) or got)
    expected = _EXPECTED.get(kind)
    if expected is not None:
        return _at(path, f"expected {expected}, got {got}")
    message = str(error["msg"]).replace("Input should be", "expected", 1)
    return _at(path, f"{message[:1].lower()}{message[1:]}, got {got}")


def _json_reason(error: Mapping[str, Any]) -> str:
    """The parser's reason, and the rule behind it where the parser names only a symptom."""
    reason = str(error.get("ctx", {}).get("error", error["msg"]))
    if "hex escape" in reason:
        reason += f"; {_SURROGATES}"
    elif "invalid unicode code point" in reason:  # a byte that is not UTF-8
        reason += "; expected UTF-8 text"
    elif "number out of range" in reason:  # the reader's limit on long integers
        reason += f"; expected an integer of at most {MAX_DIGITS} digits"
    body = error.get("input")
    if isinstance(body, bytes) and body.startswith(b"\xef\xbb\xbf"):
        reason += "; the body starts with a byte order mark: send the JSON without one"
    return reason


def _at(path: str, problem: str) -> str:
    return f"{path}: {problem}" if path else problem


def _path(loc: Iterable[Any]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif isinstance(part, str) and part.startswith(_TAG):
            continue
        else:
            path = f"{path}.{part}" if path else str(part)
    return path


def _shown(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return _repr(value, 60)
    return cut(text)


def _repr(value: Any, limit: int = 80) -> str:
    """``repr(value)``, at most ``limit`` characters; never raises (an error message uses it)."""
    try:
        text = repr(value)
    except Exception as exc:  # a broken __repr__, an int too long to print
        text = f"<{type(value).__name__}, repr() raised {type(exc).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
