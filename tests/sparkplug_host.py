"""An independent Sparkplug B 3.0 host application for the tests.

Independent of the product twice over: its MQTT client is mosquitto's own (``mosquitto_sub`` and
``mosquitto_pub``, libmosquitto in C, not paho), and it reads and writes the protobuf wire format
with the few functions below, written from the field numbers in the Sparkplug specification (not
with the protobuf package or the product's payload module).

It behaves as a primary host does: a *session* process holds the host's MQTT session with the
STATE death certificate as its will (``online: false``, retained), the birth certificate is
published retained once that session is up, and killing the session process makes the broker
publish the death. An *observer* process subscribes to the group's topics and checks every message
against the 3.0 rules as it arrives (:meth:`IndependentHost._check`); :attr:`violations` lists
what broke them.
"""

from __future__ import annotations

import json
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# -- the protobuf wire format (varint 0, 64-bit 1, length-delimited 2, 32-bit 5) -------------------
_METRIC_FIELDS = {1: "name", 2: "alias", 3: "timestamp", 4: "datatype", 5: "is_historical", 7: "is_null"}
_VALUE_FIELDS = {10: "int", 11: "long", 12: "float", 13: "double", 14: "boolean", 15: "string", 16: "bytes"}
BOOLEAN, INT32, INT64, STRING, DATETIME = 11, 3, 4, 12, 13


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def _fields(buf: bytes) -> list[tuple[int, Any]]:
    """(field number, raw value) in order: ints for varints, bytes for the rest."""
    out, i = [], 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = buf[i : i + 8], i + 8
        elif wire == 2:
            n, i = _varint(buf, i)
            value, i = buf[i : i + n], i + n
        elif wire == 5:
            value, i = buf[i : i + 4], i + 4
        else:
            raise ValueError(f"wire type {wire} of field {number}")
        out.append((number, value))
    return out


def decode_payload(buf: bytes) -> dict[str, Any]:
    """``{"timestamp", "seq", "metrics": [{name, alias, timestamp, datatype, is_historical, is_null,
    value_field, raw}]}``; a key is absent when its field was not sent."""
    payload: dict[str, Any] = {"metrics": []}
    for number, value in _fields(buf):
        if number == 1:
            payload["timestamp"] = value
        elif number == 3:
            payload["seq"] = value
        elif number == 2:
            metric: dict[str, Any] = {}
            for n, v in _fields(value):
                if n in _METRIC_FIELDS:
                    metric[_METRIC_FIELDS[n]] = v.decode() if n == 1 else v
                elif n in _VALUE_FIELDS:
                    metric["value_field"], metric["raw"] = _VALUE_FIELDS[n], v
            payload["metrics"].append(metric)
    return payload


def metric_value(metric: dict[str, Any], datatype: int) -> Any:
    """A metric's value read with the data type its birth declared."""
    if metric.get("is_null"):
        return None
    field_, raw = metric.get("value_field"), metric.get("raw")
    if field_ == "int":
        return raw - (1 << 32) if datatype == INT32 and raw >= 1 << 31 else raw
    if field_ == "long":
        return raw - (1 << 64) if datatype == INT64 and raw >= 1 << 63 else raw
    if field_ == "float":
        return struct.unpack("<f", raw)[0]
    if field_ == "double":
        return struct.unpack("<d", raw)[0]
    if field_ == "boolean":
        return bool(raw)
    if field_ == "string":
        return raw.decode()
    return raw


def _key(number: int, wire: int) -> bytes:
    return _enc_varint(number << 3 | wire)


def _enc_varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _len_field(number: int, data: bytes) -> bytes:
    return _key(number, 2) + _enc_varint(len(data)) + data


def encode_command(metrics: list[dict[str, Any]], ts: int | None = None) -> bytes:
    """An NCMD/DCMD payload; each metric ``{"name" or "alias", "datatype", "value"}``."""
    out = _key(1, 0) + _enc_varint(ts or int(time.time() * 1000))
    for m in metrics:
        body = b""
        if "name" in m:
            body += _len_field(1, m["name"].encode())
        if "alias" in m:
            body += _key(2, 0) + _enc_varint(m["alias"])
        body += _key(4, 0) + _enc_varint(m["datatype"])
        value = m["value"]
        if m["datatype"] == BOOLEAN:
            body += _key(14, 0) + _enc_varint(int(bool(value)))
        elif m["datatype"] == INT32:
            body += _key(10, 0) + _enc_varint(value & 0xFFFFFFFF)
        elif m["datatype"] == STRING:
            body += _len_field(15, value.encode())
        else:
            raise ValueError(f"data type {m['datatype']} is not written by this host")
        out += _len_field(2, body)
    return out


# -- the host ---------------------------------------------------------------------------------------
@dataclass
class Seen:
    """One message as the host read it: metrics resolved to names through the births' aliases."""

    kind: str
    device: str | None
    seq: int | None
    values: dict[str, Any]
    timestamps: dict[str, int]
    historical: dict[str, bool]
    raw: dict[str, Any] = field(repr=False)


class IndependentHost:
    """A primary host and checker for one Sparkplug group (see the module doc)."""

    def __init__(self, host: str, port: int, group: str, host_id: str, tls: list[str] | None = None) -> None:
        self.broker, self.group, self.host_id = (host, port), group, host_id
        self.tls = tls or []
        self.seen: list[Seen] = []
        self.violations: list[str] = []
        self._lock = threading.Lock()
        # per edge node: alias -> (device, name, datatype), names per device, last seq, bdSeq
        self._aliases: dict[tuple[str | None, int], tuple[str, int]] = {}
        self._types: dict[tuple[str | None, str], int] = {}
        self._alias_owner: dict[int, tuple[str | None, str]] = {}
        self._seq: int | None = None
        self.bdseq: int | None = None
        self.session: subprocess.Popen | None = None
        self.session_ts: int | None = None
        self.observer = self._sub(["-t", f"spBv1.0/{group}/#", "-t", "probe/host", "-F", "%t %x"], "observer")
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + 10
        while not self._probed:
            assert time.monotonic() < deadline, "the observer did not receive its probe"
            self._pub("probe/host", b"1")
            time.sleep(0.1)

    _probed = False

    # -- MQTT through mosquitto's own clients
    def _args(self) -> list[str]:
        return ["-h", self.broker[0], "-p", str(self.broker[1]), *self.tls]

    def _sub(self, extra: list[str], name: str) -> subprocess.Popen:
        return subprocess.Popen(
            ["mosquitto_sub", *self._args(), "-q", "1", "-i", f"{self.host_id}-{name}", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip

    def _pub(self, topic: str, payload: bytes, retain: bool = False) -> None:
        args = ["mosquitto_pub", *self._args(), "-q", "1", "-t", topic, "-s", *(["-r"] if retain else [])]
        subprocess.run(args, input=payload, check=True, timeout=10, capture_output=True)

    def go_online(self) -> int:
        """A new host session: its will is the death certificate; then the birth, both retained."""
        ts = int(time.time() * 1000)
        topic = f"spBv1.0/STATE/{self.host_id}"
        death = json.dumps({"online": False, "timestamp": ts})
        self.session = self._sub(
            ["-t", f"spBv1.0/{self.group}/NBIRTH/#", "--will-topic", topic, "--will-payload", death,
             "--will-qos", "1", "--will-retain"],
            "session",
        )  # fmt: skip
        time.sleep(0.5)  # the session's CONNECT (carrying the will) is in before the birth
        self.state(True, ts)
        self.session_ts = ts
        return ts

    def die(self) -> None:
        """The host's session ends without a DISCONNECT: the broker publishes its death certificate."""
        assert self.session is not None
        self.session.kill()
        self.session.wait(10)
        self.session = None

    def state(self, online: bool, ts: int) -> None:
        """Publish a STATE message (retained, QoS 1) with the given flag and timestamp."""
        payload = json.dumps({"online": online, "timestamp": ts}).encode()
        self._pub(f"spBv1.0/STATE/{self.host_id}", payload, retain=True)

    def command(self, node: str, device: str | None, metrics: list[dict[str, Any]]) -> None:
        """An NCMD (``device`` None) or DCMD with metrics ``{"name"|"alias", "datatype", "value"}``."""
        kind = "NCMD" if device is None else "DCMD"
        topic = f"spBv1.0/{self.group}/{kind}/{node}" + (f"/{device}" if device else "")
        self._pub(topic, encode_command(metrics))

    def alias_of(self, device: str | None, name: str) -> int:
        with self._lock:
            return next(a for (d, a), (n, _) in self._aliases.items() if d == device and n == name)

    def stop(self) -> None:
        for proc in (self.observer, self.session):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(10)
        self._reader.join(5)

    # -- waiting
    def wait_for(self, done: Callable[[list[Seen]], bool], what: str, timeout: float = 20.0) -> list[Seen]:
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                seen = list(self.seen)
            if done(seen):
                return seen
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out waiting for {what}; saw {[(s.kind, s.device) for s in seen[-12:]]}"
                )
            time.sleep(0.02)

    def count(self, kind: str) -> int:
        with self._lock:
            return sum(s.kind == kind for s in self.seen)

    # -- reading and checking
    def _read(self) -> None:
        assert self.observer.stdout is not None
        for line in self.observer.stdout:
            topic, _, hexed = line.rstrip("\n").partition(" ")
            if topic == "probe/host":
                self._probed = True
                continue
            parts = topic.split("/")
            if parts[2] in ("NCMD", "DCMD"):
                continue
            with self._lock:
                self._check(
                    parts[2], parts[4] if len(parts) > 4 else None, decode_payload(bytes.fromhex(hexed))
                )

    def _fail(self, what: str) -> None:
        self.violations.append(what)

    def _check(self, kind: str, device: str | None, p: dict[str, Any]) -> None:
        where = f"{kind} {device or ''} #{len(self.seen)}"
        values, stamps, hist = {}, {}, {}
        if kind == "NDEATH":
            if "seq" in p:
                self._fail(f"{where}: NDEATH carries a seq")
            bd = [m for m in p["metrics"] if m.get("name") == "bdSeq"]
            if len(bd) != 1 or metric_value(bd[0], INT64) != self.bdseq:
                self._fail(
                    f"{where}: NDEATH bdSeq {bd and metric_value(bd[0], INT64)} != NBIRTH's {self.bdseq}"
                )
            values = {"bdSeq": bd and metric_value(bd[0], INT64)}
            self._seq = None
        else:
            seq = p.get("seq")
            if kind == "NBIRTH":
                if seq != 0:
                    self._fail(f"{where}: NBIRTH seq {seq}")
                self._aliases.clear()
                self._alias_owner.clear()
                self._types.clear()
            elif self._seq is None:
                self._fail(f"{where}: before any NBIRTH of this session")
            elif seq != (self._seq + 1) % 256:
                self._fail(f"{where}: seq {seq} after {self._seq}")
            self._seq = seq
            for m in p["metrics"]:
                if "timestamp" not in m:
                    self._fail(f"{where}: a metric without a timestamp")
                if kind in ("NBIRTH", "DBIRTH"):
                    name, dt = m.get("name"), m.get("datatype")
                    if not name or dt is None:
                        self._fail(f"{where}: a birth metric without name or data type: {m}")
                        continue
                    if "alias" in m:
                        if name in ("Node Control/Rebirth", "bdSeq"):
                            self._fail(f"{where}: {name} must not have an alias")
                        owner = self._alias_owner.setdefault(m["alias"], (device, name))
                        if owner != (device, name):  # unique across the node and all its devices
                            self._fail(f"{where}: alias {m['alias']} of {name} already names {owner}")
                        self._aliases[(device, m["alias"])] = (name, dt)
                    elif name not in ("Node Control/Rebirth", "bdSeq"):
                        self._fail(f"{where}: birth metric {name} has no alias")
                    self._types[(device, name)] = dt
                else:  # NDATA, DDATA, DDEATH
                    if "name" in m or "datatype" in m:
                        self._fail(f"{where}: data metric with a name or data type: {m}")
                    known = self._aliases.get((device, m.get("alias", -1)))
                    if known is None:
                        self._fail(f"{where}: alias {m.get('alias')} was not born for {device}")
                        continue
                    name, dt = known
                values[name] = metric_value(m, dt)
                stamps[name] = m.get("timestamp", 0)
                hist[name] = bool(m.get("is_historical"))
            if kind == "NBIRTH":
                self.bdseq = values.get("bdSeq")
                if values.get("Node Control/Rebirth") is not False:
                    self._fail(f"{where}: Node Control/Rebirth must be born false")
        self.seen.append(Seen(kind, device, p.get("seq"), values, stamps, hist, p))
