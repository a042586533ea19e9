"""The MQTT command channel: what a command may look like, who may send it, how many, and when.

``<prefix>/<id>/cmd/<name>`` carries a JSON object (``docs/mqtt.md``, *Commands*). The channel
protects the alarm path from it:

- the MQTT network thread (the one that also sends the alarms) only counts a message against a
  token bucket (``commands_per_minute``, bursts of :data:`BURST`), refuses one over
  ``commands_max_bytes`` by its size without decoding it, and queues it; everything else (parsing,
  validation, signature, the command itself) runs on a worker thread;
- messages over the rate (or with the queue full) are dropped unanswered: counted, and summarised
  in one log line per :data:`DROP_LOG_INTERVAL_S`;
- answers go out at QoS 0 from a small bounded queue that the link sends *after* the outbox, never
  through the outbox (so they are neither stored on disk nor ahead of an alarm); only a bounded
  ``request_id`` is echoed, never the request;
- each command's fields are validated by a pydantic model that refuses unknown keys and wrong
  types; a mistake is answered ``ok: false`` with the field and the reason;
- with ``command_secret_file`` set, the commands that change behaviour (:data:`BEHAVIOUR_CHANGING`)
  must carry an HMAC-SHA256 signature over the exact bytes sent, a timestamp within
  ``command_max_age_s`` and a nonce not seen before (no replays).

Signing (``sign`` below, or ``python -m appliance.publish.commands``): take the request JSON text ``B``
exactly as it will be sent, with ``ts`` (Unix seconds) and ``nonce`` in it and ending in ``}``;
``sig = hex(HMAC-SHA256(secret, topic + "\\n" + B))``; send ``B`` with its final ``}`` replaced by
``,"sig":"<sig>"}``. The receiver cuts that suffix off again and checks the bytes that remain.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import logging
import queue
import re
import secrets
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from appliance.alarms.events import iso_utc
from appliance.config import MqttSinkConfig, TopicLevel
from appliance.errors import ApplianceError
from appliance.service.credentials import CredentialError

log = logging.getLogger("appliance.mqtt")

BURST = 10
"""Commands accepted at once before ``commands_per_minute`` paces them."""
BEHAVIOUR_CHANGING = frozenset({"recalibrate", "reload", "learn", "ack", "shelve", "unshelve"})
"""Commands that change what the appliance alarms on: signed when a command secret is configured."""
LONG_RUNNING = frozenset({"recalibrate", "learn"})
"""Commands that block for minutes: run one at a time beside the quick ones, not in front of them."""
MAX_ID_CHARS = 64
DROP_LOG_INTERVAL_S = 10.0
QUICK_QUEUE = 16
ANSWER_QUEUE = 64
ANSWERS_PER_FLUSH = 8
MAX_NONCES = 10_000
MAX_ERROR_CHARS = 300
_SIG_SUFFIX = re.compile(rb',"sig":"([0-9a-f]{64})"\}\s*\Z')

Handler = Callable[[str, dict[str, Any]], dict[str, Any]]


# -- requests ----------------------------------------------------------------------------------
class CommandRequest(BaseModel):
    """Fields every command may carry; a command's own model adds its fields."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    request_id: str | None = Field(None, max_length=MAX_ID_CHARS, description="Echoed in the answer.")
    ts: float | None = Field(None, allow_inf_nan=False, description="Unix time of signing (signed only).")
    nonce: str | None = Field(
        None, min_length=8, max_length=64, description="Unique per signed command (replay protection)."
    )

    def arguments(self) -> dict[str, Any]:
        """What the handler receives: the command's own fields, typed, without the envelope."""
        return self.model_dump(exclude={"request_id", "ts", "nonce"})


class StatusRequest(CommandRequest):
    """``status``: publish a fresh retained status."""


class ReloadRequest(CommandRequest):
    """``reload``: re-read the calibrated thresholds."""


class RecalibrateRequest(CommandRequest):
    """``recalibrate``: learn one camera's threshold from the running pipeline."""

    camera: TopicLevel | None = Field(None, description="Camera id; may be left out with one camera.")
    minutes: float = Field(3.0, gt=0, le=240, allow_inf_nan=False, description="Live footage to learn from.")
    target_alarms_per_hour: float = Field(
        0.125, gt=0, le=3600, allow_inf_nan=False, description="Alarm rate on normal work to aim for."
    )
    accept_drift: bool = Field(False, description="Save even if the scores drifted far from the bundle's.")


class LearnRequest(CommandRequest):
    """``learn``: learn one camera's site model (and its threshold) from the running pipeline."""

    camera: TopicLevel | None = Field(None, description="Camera id; may be left out with one camera.")
    minutes: float = Field(10.0, gt=0, le=240, allow_inf_nan=False, description="Live footage to learn from.")
    target_alarms_per_hour: float = Field(
        2.0, gt=0, le=3600, allow_inf_nan=False, description="Alarm rate on normal work to aim for."
    )


class AlarmRequest(CommandRequest):
    """What every alarm-point action names: the point, who acts, and why."""

    camera: TopicLevel | None = Field(None, description="Camera id; may be left out with one camera.")
    point: TopicLevel | None = Field(None, description="Zone name (default: 'all', a camera without zones).")
    by: str = Field(min_length=1, max_length=64, description="Who acts (operator name or badge).")
    comment: str | None = Field(None, max_length=500, description="Why, for the audit log.")


class AckRequest(AlarmRequest):
    """``ack``: acknowledge an alarm point (active -> acknowledged, returned -> normal)."""


class ShelveRequest(AlarmRequest):
    """``shelve``: suppress a nuisance point for a while; it comes back by itself."""

    minutes: float = Field(gt=0, le=480, allow_inf_nan=False, description="How long (at most 8 h).")


class UnshelveRequest(AlarmRequest):
    """``unshelve``: end a shelf early."""


REQUESTS: dict[str, type[CommandRequest]] = {
    "status": StatusRequest,
    "reload": ReloadRequest,
    "recalibrate": RecalibrateRequest,
    "learn": LearnRequest,
    "ack": AckRequest,
    "shelve": ShelveRequest,
    "unshelve": UnshelveRequest,
}
"""Known commands and their request models (a new command needs an entry here)."""


class CommandRefused(ApplianceError):
    """A command that is not run; the message says why in words (it becomes the answer's error)."""


def describe_errors(exc: ValidationError) -> str:
    """``field: reason`` for each mistake (at most three), without echoing the values sent."""
    parts = []
    for err in exc.errors()[:3]:
        field = ".".join(str(p) for p in err["loc"])[:40] or "request"
        if err["type"] == "extra_forbidden":
            parts.append(f"{field}: unknown field")
        else:
            parts.append(f"{field}: {err['msg']}")
    more = len(exc.errors()) - 3
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def parse_request(name: str, body: bytes) -> CommandRequest:
    """The typed request of command ``name`` from its JSON text; :class:`CommandRefused` if invalid."""
    model = REQUESTS.get(name)
    if model is None:
        raise CommandRefused(f"unknown command {name!r}; known: {', '.join(sorted(REQUESTS))}")
    try:
        data = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise CommandRefused(f"payload is not a JSON object ({str(exc)[:80]})") from None
    if not isinstance(data, dict):
        raise CommandRefused("payload is not a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise CommandRefused(f"invalid {name} request: {describe_errors(exc)}") from None


def request_id_of(body: bytes) -> str | None:
    """The request's ``request_id`` if it is a short string (echoed even when the rest is invalid)."""
    try:
        rid = json.loads(body).get("request_id")
    except (ValueError, UnicodeDecodeError, AttributeError):
        return None
    return rid if isinstance(rid, str) and len(rid) <= MAX_ID_CHARS else None


# -- signatures --------------------------------------------------------------------------------
def signed_message(topic: str, body: bytes) -> bytes:
    """The bytes an HMAC covers: the full command topic (so it cannot be replayed on another
    command or appliance), a newline, and the request exactly as sent without its signature."""
    return topic.encode() + b"\n" + body


def sign(secret: bytes, topic: str, request: dict[str, Any], now: float | None = None) -> bytes:
    """A signed payload for ``topic``: ``request`` plus ``ts`` and a fresh ``nonce``, then ``sig``."""
    body = json.dumps(
        {**request, "ts": round(now if now is not None else time.time(), 3), "nonce": secrets.token_hex(12)},
        separators=(",", ":"),
    ).encode()
    sig = hmac.new(secret, signed_message(topic, body), hashlib.sha256).hexdigest()
    return body[:-1] + b',"sig":"' + sig.encode() + b'"}'


def split_signature(payload: bytes) -> tuple[bytes, str | None]:
    """``(signed body, signature)`` of a payload ending in ``,"sig":"<hex>"}``; else ``(payload, None)``."""
    m = _SIG_SUFFIX.search(payload)
    if m is None:
        return payload, None
    return payload[: m.start()] + b"}", m.group(1).decode()


def read_secret(path: Path) -> bytes:
    """The command secret: the file's first line (stripped); refused if unreadable or short."""
    try:
        lines = Path(path).read_text().strip().splitlines()
    except OSError as exc:
        raise CredentialError(f"mqtt command_secret_file {path}: {exc.strerror}") from None
    secret = lines[0].strip() if lines else ""
    if len(secret) < 16:
        raise CredentialError(
            f"mqtt command_secret_file {path}: the secret must be at least 16 characters "
            "(e.g. openssl rand -hex 32)"
        )
    return secret.encode()


class ReplayGuard:
    """Refuses signed commands that are too old, too far in the future, or seen before."""

    def __init__(self, max_age_s: float) -> None:
        self.max_age_s = max_age_s
        self._seen: OrderedDict[str, float] = OrderedDict()  # nonce -> when it may be forgotten

    def check(self, ts: float | None, nonce: str | None, now: float | None = None) -> None:
        now = time.time() if now is None else now
        if ts is None or nonce is None:
            raise CommandRefused("a signed command needs 'ts' (Unix seconds) and 'nonce'")
        if abs(now - ts) > self.max_age_s:
            raise CommandRefused(
                f"signed {abs(now - ts):.0f} s {'ago' if ts < now else 'ahead'}, more than "
                f"command_max_age_s ({self.max_age_s:g} s): a replay, or a clock not set by NTP"
            )
        while self._seen and next(iter(self._seen.values())) < now:
            self._seen.popitem(last=False)
        if nonce in self._seen:
            raise CommandRefused("this nonce was used already (a replayed command)")
        if len(self._seen) >= MAX_NONCES:
            raise CommandRefused("too many signed commands in the replay window; try again later")
        # a ts up to max_age_s ahead stays acceptable until ts + max_age_s <= now + 2 * max_age_s
        self._seen[nonce] = now + 2 * self.max_age_s


# -- rate ------------------------------------------------------------------------------------------
class TokenBucket:
    """``rate_per_s`` tokens a second, at most ``burst`` saved up; one token per command."""

    def __init__(self, rate_per_s: float, burst: int) -> None:
        self.rate = rate_per_s
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def take(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


# -- the channel -----------------------------------------------------------------------------------
class CommandChannel:
    """Receives commands (from the MQTT network thread), runs them on workers, queues the answers.

    ``receive`` is all the network thread does per message: O(1), no decoding, no disk, at most one
    log line per accepted message. ``flush`` is called by the link thread after it has handed the
    outbox to the broker, so alarms go first.
    """

    def __init__(self, cfg: MqttSinkConfig, base_topic: str, handler: Handler) -> None:
        self.base = base_topic
        self.handler = handler
        self.max_bytes = cfg.commands_max_bytes
        self.per_minute = cfg.commands_per_minute
        self.secret = read_secret(cfg.command_secret_file) if cfg.command_secret_file else None
        self.replays = ReplayGuard(cfg.command_max_age_s)
        self.bucket = TokenBucket(cfg.commands_per_minute / 60.0, BURST)
        self.received = 0
        self.dropped = 0  # over the rate, or the queue full: not answered
        self.refused = 0  # answered ok: false before running (size, validation, signature)
        self._dropped_unlogged = 0
        self._drop_log_due = 0.0
        self._answers: deque[tuple[str, bytes]] = deque(maxlen=ANSWER_QUEUE)
        self._quick: queue.Queue[tuple[str, bytes]] = queue.Queue(QUICK_QUEUE)
        self._long: queue.Queue[tuple[str, bytes]] = queue.Queue(1)
        self._long_busy = threading.Event()
        for lane, q in (("quick", self._quick), ("long", self._long)):
            threading.Thread(target=self._work, args=(q,), name=f"mqtt-cmd-{lane}", daemon=True).start()
        if self.secret is None:
            log.warning(
                "MQTT commands are on without command_secret_file: any client the broker lets publish "
                "to %s/cmd/# can %s; restrict it with the broker's ACLs",
                self.base, " and ".join(sorted(BEHAVIOUR_CHANGING - {"learn"})),
            )  # fmt: skip

    # -- network thread ------------------------------------------------------------------------
    def receive(self, topic: str, payload: bytes) -> None:
        """One message on ``<base>/cmd/<name>``: rate, size and queue checks only (cheap)."""
        self.received += 1
        if not self.bucket.take():
            self._drop()
            return
        name = topic.rsplit("/", 1)[-1]
        if len(name) > MAX_ID_CHARS:
            self._drop()
            return
        if len(payload) > self.max_bytes:
            self.refused += 1
            size = f"{len(payload)} bytes, over commands_max_bytes ({self.max_bytes})"
            log.warning("MQTT command %s refused unread: %s", name, size)
            self.answer(name, None, {"ok": False, "error": f"payload of {size}"})
            return
        if name in LONG_RUNNING:
            if self._long_busy.is_set():
                self.refused += 1
                busy = "busy: a long command (recalibrate or learn) is running; it answers when done"
                self.answer(name, request_id_of(payload), {"ok": False, "error": busy})
                return
            self._long_busy.set()
            self._long.put_nowait((name, payload))
            return
        try:
            self._quick.put_nowait((name, payload))
        except queue.Full:
            self._drop()

    def _drop(self) -> None:
        self.dropped += 1
        self._dropped_unlogged += 1
        self.log_drops()

    def log_drops(self) -> None:
        """One summary line per interval for the commands dropped over the rate (not one each)."""
        now = time.monotonic()
        if self._dropped_unlogged and now >= self._drop_log_due:
            log.warning(
                "MQTT commands: %d dropped over commands_per_minute (%g) or a full queue; %d in all",
                self._dropped_unlogged, self.per_minute, self.dropped,
            )  # fmt: skip
            self._dropped_unlogged = 0
            self._drop_log_due = now + DROP_LOG_INTERVAL_S

    # -- link thread -------------------------------------------------------------------------
    def flush(self, client) -> None:
        """Publish up to :data:`ANSWERS_PER_FLUSH` answers at QoS 0 (after the outbox)."""
        for _ in range(ANSWERS_PER_FLUSH):
            try:
                topic, payload = self._answers.popleft()
            except IndexError:
                break
            client.publish(topic, payload, qos=0)
        if self._dropped_unlogged:
            self.log_drops()

    # -- workers -------------------------------------------------------------------------------
    def _work(self, lane: queue.Queue[tuple[str, bytes]]) -> None:
        while True:
            name, payload = lane.get()
            try:
                self.run(name, payload)
            except Exception as exc:  # keep the worker alive whatever happens
                log.error("MQTT command %s: %s: %s", name, type(exc).__name__, str(exc)[:MAX_ERROR_CHARS])
            finally:
                if lane is self._long:
                    self._long_busy.clear()

    def run(self, name: str, payload: bytes) -> dict[str, Any]:
        """Check, run and answer one command; returns the answer (also queued for publishing)."""
        body, sig = split_signature(payload)
        rid = request_id_of(body)
        try:
            request = self.authorise(name, body, sig)
        except CommandRefused as exc:
            self.refused += 1
            log.info("MQTT command %s refused: %s", name, exc)
            return self.answer(name, rid, {"ok": False, "error": str(exc)})
        log.info(
            "MQTT command %s%s%s", name, f" ({rid})" if rid else "", " signed" if sig and self.secret else ""
        )
        try:
            answer = self.handler(name, request.arguments())
        except ApplianceError as exc:
            answer = {"ok": False, "error": str(exc)}
        except Exception as exc:  # a command must always be answered; one line, no traceback
            log.error("MQTT command %s failed: %s: %s", name, type(exc).__name__, str(exc)[:MAX_ERROR_CHARS])
            answer = {"ok": False, "error": f"internal error: {type(exc).__name__}: {exc}"}
        if not isinstance(answer, dict):
            answer = {"ok": False, "error": f"internal error: {name} answered {type(answer).__name__}"}
        return self.answer(name, rid, answer)

    def authorise(self, name: str, body: bytes, sig: str | None) -> CommandRequest:
        """The validated request, if its signature (where needed) is good and it is not a replay."""
        topic = f"{self.base}/cmd/{name}"
        if self.secret is not None:
            if sig is None and name in BEHAVIOUR_CHANGING:
                raise CommandRefused(
                    f"{name} changes behaviour and must be signed (command_secret_file is set); "
                    "see docs/mqtt.md, Commands"
                )
            if sig is not None:
                good = hmac.new(self.secret, signed_message(topic, body), hashlib.sha256).hexdigest()
                if not hmac.compare_digest(good, sig):
                    raise CommandRefused("bad signature (wrong secret, or the payload was changed)")
        request = parse_request(name, body)
        if self.secret is not None and sig is not None:
            self.replays.check(request.ts, request.nonce)
        return request

    def answer(self, name: str, request_id: str | None, answer: dict[str, Any]) -> dict[str, Any]:
        """Queue ``answer`` for ``<base>/cmd/<name>/response`` (bounded: the oldest go if it is full)."""
        if isinstance(answer.get("error"), str) and len(answer["error"]) > MAX_ERROR_CHARS:
            answer = {**answer, "error": answer["error"][:MAX_ERROR_CHARS] + "..."}
        reply = {"command": name, "request_id": request_id, "time": iso_utc(time.time()), **answer}
        self._answers.append((f"{self.base}/cmd/{name}/response", json.dumps(reply, default=str).encode()))
        return reply


def main(argv: list[str] | None = None) -> int:
    """A signed command payload:
    ``python -m appliance.publish.commands --secret-file F --topic T '{"camera": "c"}'``."""
    p = argparse.ArgumentParser(description="Sign an MQTT command for an appliance (prints the payload).")
    p.add_argument("--secret-file", type=Path, required=True, help="the appliance's command_secret_file")
    p.add_argument("--topic", required=True, help="<prefix>/<appliance_id>/cmd/<name>")
    p.add_argument("request", nargs="?", default="{}", help="the request as a JSON object")
    args = p.parse_args(argv)
    try:
        request = json.loads(args.request)
        if not isinstance(request, dict):
            raise ValueError("expected a JSON object")
        secret = read_secret(args.secret_file)
    except (ValueError, ApplianceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(sign(secret, args.topic, request).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
