"""Sparkplug B protobuf classes, built at import time from ``sparkplug_b.proto`` without protoc.

The ``.proto`` file beside this module is the one definition of the wire format. A small parser
(enough for proto2 messages, enums, fields, oneofs and extension ranges, which is all that file
uses) turns it into a ``FileDescriptorProto``; protobuf's own runtime then makes the message
classes. The descriptors live in a private pool, so another Sparkplug library in the same process
(with the same full names in the default pool) cannot conflict with them. The only dependency is
the ``protobuf`` package.

Checked against protoc (grpcio-tools 1.85.1, protobuf 7.36.2): apart from the file options and
``json_name``, which protoc adds and the wire format ignores, the descriptor equals the one of
``python -m grpc_tools.protoc -I appliance/sparkplug --descriptor_set_out=spb.desc sparkplug_b.proto``.
"""

from __future__ import annotations

import re
from enum import IntEnum
from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from appliance.publish.sparkplug import SparkplugError

PROTO_PATH = Path(__file__).with_name("sparkplug_b.proto")
PACKAGE = "org.eclipse.tahu.protobuf"

_FDP = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    "double": _FDP.TYPE_DOUBLE,
    "float": _FDP.TYPE_FLOAT,
    "int32": _FDP.TYPE_INT32,
    "int64": _FDP.TYPE_INT64,
    "uint32": _FDP.TYPE_UINT32,
    "uint64": _FDP.TYPE_UINT64,
    "sint32": _FDP.TYPE_SINT32,
    "sint64": _FDP.TYPE_SINT64,
    "fixed32": _FDP.TYPE_FIXED32,
    "fixed64": _FDP.TYPE_FIXED64,
    "sfixed32": _FDP.TYPE_SFIXED32,
    "sfixed64": _FDP.TYPE_SFIXED64,
    "bool": _FDP.TYPE_BOOL,
    "string": _FDP.TYPE_STRING,
    "bytes": _FDP.TYPE_BYTES,
}
_LABELS = {"optional": _FDP.LABEL_OPTIONAL, "repeated": _FDP.LABEL_REPEATED, "required": _FDP.LABEL_REQUIRED}
_MAX_FIELD_NUMBER = 536870911  # 2**29 - 1, the "max" of an extension range
_TOKEN = re.compile(r'\s+|//[^\n]*|/\*.*?\*/|(?P<tok>"[^"\n]*"|[A-Za-z_][A-Za-z0-9_.]*|\d+|[{};=\[\]])', re.S)


class _ProtoParser:
    """Parses the proto2 subset of ``sparkplug_b.proto`` into a ``FileDescriptorProto``."""

    def __init__(self, text: str, name: str) -> None:
        self.name = name
        self.tokens: list[tuple[str, int]] = []
        pos, line = 0, 1
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None:
                raise SparkplugError(f"{name}:{line}: unexpected character {text[pos]!r}")
            if m.group("tok") is not None:
                self.tokens.append((m.group("tok"), line))
            line += m.group(0).count("\n")
            pos = m.end()
        self.i = 0
        # (field, scope) pairs whose type names are resolved once every message and enum is known
        self.unresolved: list[tuple[descriptor_pb2.FieldDescriptorProto, str]] = []
        self.messages: set[str] = set()
        self.enums: set[str] = set()

    # -- tokens
    def _fail(self, what: str) -> SparkplugError:
        line = self.tokens[min(self.i, len(self.tokens) - 1)][1] if self.tokens else 1
        return SparkplugError(f"{self.name}:{line}: {what}")

    def _peek(self) -> str | None:
        return self.tokens[self.i][0] if self.i < len(self.tokens) else None

    def _next(self) -> str:
        if self.i >= len(self.tokens):
            raise self._fail("unexpected end of file")
        tok = self.tokens[self.i][0]
        self.i += 1
        return tok

    def _expect(self, want: str) -> None:
        tok = self._next()
        if tok != want:
            self.i -= 1
            raise self._fail(f"expected {want!r}, found {tok!r}")

    def _ident(self) -> str:
        tok = self._next()
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", tok):
            self.i -= 1
            raise self._fail(f"expected a name, found {tok!r}")
        return tok

    def _int(self) -> int:
        tok = self._next()
        if not tok.isdigit():
            self.i -= 1
            raise self._fail(f"expected a number, found {tok!r}")
        return int(tok)

    # -- grammar
    def parse(self) -> descriptor_pb2.FileDescriptorProto:
        fd = descriptor_pb2.FileDescriptorProto(name=PROTO_PATH.name)
        while self._peek() is not None:
            tok = self._next()
            if tok == "syntax":
                self._expect("=")
                syntax = self._next()
                if syntax != '"proto2"':
                    raise self._fail(f"only proto2 is supported, not {syntax}")
                self._expect(";")
            elif tok == "package":
                fd.package = self._ident()
                self._expect(";")
            elif tok == "option":  # file options (java_package, ...) do not change the wire format
                self._ident()
                self._expect("=")
                self._next()
                self._expect(";")
            elif tok == "enum":
                self._enum(fd.enum_type.add(), fd.package)
            elif tok == "message":
                self._message(fd.message_type.add(), fd.package)
            else:
                self.i -= 1
                raise self._fail(f"unsupported statement {tok!r}")
        self._resolve()
        return fd

    def _enum(self, enum: descriptor_pb2.EnumDescriptorProto, scope: str) -> None:
        enum.name = self._ident()
        self.enums.add(f"{scope}.{enum.name}")
        self._expect("{")
        while self._peek() != "}":
            value = enum.value.add(name=self._ident())
            self._expect("=")
            value.number = self._int()
            self._expect(";")
        self._expect("}")

    def _message(self, msg: descriptor_pb2.DescriptorProto, scope: str) -> None:
        msg.name = self._ident()
        full = f"{scope}.{msg.name}"
        self.messages.add(full)
        self._expect("{")
        while (tok := self._next()) != "}":
            if tok == "message":
                self._message(msg.nested_type.add(), full)
            elif tok == "enum":
                self._enum(msg.enum_type.add(), full)
            elif tok == "extensions":
                start = self._int()
                self._expect("to")
                if self._peek() == "max":
                    self._next()
                    end = _MAX_FIELD_NUMBER
                else:
                    end = self._int()
                msg.extension_range.add(start=start, end=end + 1)  # the descriptor's end is exclusive
                self._expect(";")
            elif tok == "oneof":
                index = len(msg.oneof_decl)
                msg.oneof_decl.add(name=self._ident())
                self._expect("{")
                while self._peek() != "}":
                    self._field(msg, full, _FDP.LABEL_OPTIONAL, self._ident(), oneof_index=index)
                self._expect("}")
            elif tok in _LABELS:
                self._field(msg, full, _LABELS[tok], self._ident())
            else:
                self.i -= 1
                raise self._fail(f"unsupported statement {tok!r} in message {msg.name}")

    def _field(
        self, msg: descriptor_pb2.DescriptorProto, scope: str, label: int, type_name: str, oneof_index=None
    ) -> None:
        field = msg.field.add(name=self._ident(), label=label)
        self._expect("=")
        field.number = self._int()
        if self._peek() == "[":
            raise self._fail("field options are not supported")
        self._expect(";")
        if oneof_index is not None:
            field.oneof_index = oneof_index
        if type_name in _SCALARS:
            field.type = _SCALARS[type_name]
        else:
            field.type_name = type_name
            self.unresolved.append((field, scope))

    def _resolve(self) -> None:
        """Protobuf's scoping: look the name up in the field's message, then each enclosing scope."""
        for field, scope in self.unresolved:
            parts = scope.split(".")
            for n in range(len(parts), -1, -1):
                candidate = ".".join([*parts[:n], field.type_name])
                if candidate in self.messages or candidate in self.enums:
                    field.type = _FDP.TYPE_MESSAGE if candidate in self.messages else _FDP.TYPE_ENUM
                    field.type_name = "." + candidate
                    break
            else:
                raise SparkplugError(f"{self.name}: unknown type {field.type_name!r} in {scope}")


def parse_proto(text: str, name: str = "sparkplug_b.proto") -> descriptor_pb2.FileDescriptorProto:
    """The ``FileDescriptorProto`` of a proto2 file in the subset ``sparkplug_b.proto`` uses."""
    return _ProtoParser(text, name).parse()


def _build() -> type:
    fd = parse_proto(PROTO_PATH.read_text(encoding="utf-8"), str(PROTO_PATH))
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(fd.SerializeToString())
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.Payload"))


Payload = _build()
"""The Sparkplug B payload message class (``Payload.Metric``, ``Payload.DataSet``, ... are nested)."""
Metric = Payload.Metric


class DataType(IntEnum):
    """Sparkplug B data types (the ``DataType`` enum of ``sparkplug_b.proto``; a test keeps them equal)."""

    Unknown = 0
    Int8 = 1
    Int16 = 2
    Int32 = 3
    Int64 = 4
    UInt8 = 5
    UInt16 = 6
    UInt32 = 7
    UInt64 = 8
    Float = 9
    Double = 10
    Boolean = 11
    String = 12
    DateTime = 13
    Text = 14
    UUID = 15
    DataSet = 16
    Bytes = 17
    File = 18
    Template = 19
    PropertySet = 20
    PropertySetList = 21
    Int8Array = 22
    Int16Array = 23
    Int32Array = 24
    Int64Array = 25
    UInt8Array = 26
    UInt16Array = 27
    UInt32Array = 28
    UInt64Array = 29
    FloatArray = 30
    DoubleArray = 31
    BooleanArray = 32
    StringArray = 33
    DateTimeArray = 34


MetricValue = bool | int | float | str | bytes | None

# Int8 and Int16 are left out: implementations disagree on how their negative values are encoded.
_INT_VALUE = {DataType.Int32, DataType.UInt8, DataType.UInt16}
_LONG_VALUE = {DataType.Int64, DataType.UInt32, DataType.UInt64, DataType.DateTime}
_SIGNED_BITS = {DataType.Int32: 32, DataType.Int64: 64}
_STRING_VALUE = {DataType.String, DataType.Text, DataType.UUID}


def make_metric(name: str, datatype: DataType, value: MetricValue, timestamp_ms: int | None = None):
    """A ``Payload.Metric`` holding ``value`` in the field its data type uses; ``None`` sets ``is_null``.

    Signed integers go into the unsigned fields as two's complement (Int32 in 32 bits, Int64 in 64),
    as the specification prescribes.
    """
    m = Metric(name=name, datatype=int(datatype))
    if timestamp_ms is not None:
        m.timestamp = timestamp_ms
    if value is None:
        m.is_null = True
    elif datatype in _INT_VALUE or datatype in _LONG_VALUE:
        bits = _SIGNED_BITS.get(datatype, 64 if datatype in _LONG_VALUE else 32)
        encoded = int(value) & ((1 << bits) - 1)
        if datatype in _INT_VALUE:
            m.int_value = encoded
        else:
            m.long_value = encoded
    elif datatype == DataType.Float:
        m.float_value = float(value)
    elif datatype == DataType.Double:
        m.double_value = float(value)
    elif datatype == DataType.Boolean:
        m.boolean_value = bool(value)
    elif datatype in _STRING_VALUE:
        m.string_value = str(value)
    elif datatype in (DataType.Bytes, DataType.File):
        m.bytes_value = bytes(value)  # type: ignore[arg-type]
    else:
        raise ValueError(f"metric {name!r}: data type {datatype.name} is not supported here")
    return m


def metric_value(m) -> MetricValue:
    """The Python value of a ``Payload.Metric`` (signed types decoded back from two's complement)."""
    if m.is_null:
        return None
    datatype = DataType(m.datatype) if m.datatype in DataType._value2member_map_ else DataType.Unknown
    if datatype in _INT_VALUE or datatype in _LONG_VALUE:
        raw = m.int_value if datatype in _INT_VALUE else m.long_value
        bits = _SIGNED_BITS.get(datatype)
        if bits is not None and raw >= 1 << (bits - 1):
            raw -= 1 << bits
        return raw
    field = m.WhichOneof("value")
    return None if field is None else getattr(m, field)
