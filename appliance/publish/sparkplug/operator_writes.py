"""DCMD writes from a Sparkplug host: acknowledge and shelve a camera's alarm points.

A host writes ``Alarm/<point>/Acknowledge = true`` or ``Alarm/<point>/ShelveMinutes = N`` (N > 0
shelves for N minutes, 0 unshelves), optionally with ``Operator/Name`` and ``Operator/Comment`` in
the same DCMD or an earlier one (an HMI writes one tag at a time). Each action becomes the same
request the MQTT ``cmd/ack|shelve|unshelve`` topics carry, validated by the same models and run by
the same handlers, so the audit log and the alarm board cannot tell the two paths apart. The outcome
is written back as ``Operator/LastResult``; the point's own metrics show the new state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from google.protobuf.message import DecodeError
from pydantic import ValidationError

from appliance.publish.commands import BURST, REQUESTS, TokenBucket, describe_errors
from appliance.publish.sparkplug.metrics import ACKNOWLEDGE, REBIRTH, SHELVE_MINUTES, split_point_metric
from appliance.publish.sparkplug.payload import MetricValue, Payload

if TYPE_CHECKING:
    from appliance.config.sparkplug import SparkplugSinkConfig
    from appliance.publish.sparkplug.book import MetricBook

log = logging.getLogger("appliance.sparkplug.node")

Run = Callable[[str, dict[str, Any]], dict[str, Any]]
OPERATOR, COMMENT, RESULT = "Operator/Name", "Operator/Comment", "Operator/LastResult"
MAX_TEXT = 500


def decode_command(kind: str, payload: bytes):
    """The Sparkplug payload of an NCMD/DCMD, or None (with a warning) when it is not one."""
    try:
        return Payload.FromString(payload)
    except DecodeError:
        log.warning("Sparkplug: ignoring a %s that is not a Sparkplug B payload", kind)
        return None


def asks_rebirth(payload) -> bool:
    """Whether an NCMD writes ``Node Control/Rebirth = true`` (by name: it never has an alias)."""
    return any(m.name == REBIRTH and written_value(m) is True for m in payload.metrics)


def written_value(metric) -> MetricValue:
    """The value a host wrote, from whichever field it used (a DCMD need not repeat the data type)."""
    field = metric.WhichOneof("value")
    if field is None or metric.is_null:
        return None
    value = getattr(metric, field)
    if field == "int_value" and value >= 2**31:  # Int32 travels as two's complement
        value -= 2**32
    elif field == "long_value" and value >= 2**63:
        value -= 2**64
    return value


class OperatorWrites:
    """Turns one camera's DCMD writes into alarm commands (rate-limited, whoever the host is)."""

    def __init__(self, run: Run, default_operator: str, per_minute: float) -> None:
        self.run = run
        self.default_operator = default_operator
        self.bucket = TokenBucket(per_minute / 60.0, BURST)
        self.dropped = 0

    @classmethod
    def for_sink(cls, cfg: SparkplugSinkConfig, run: Run | None) -> OperatorWrites | None:
        """The writes a sink takes: None unless ``commands: true`` and the appliance runs commands."""
        if not cfg.commands or run is None:
            return None
        return cls(run, f"sparkplug:{cfg.primary_host_id or 'host'}", cfg.commands_per_minute)

    def admit(self) -> bool:
        """One DCMD against the rate; over it, the DCMD is dropped and counted."""
        if self.bucket.take():
            return True
        self.dropped += 1
        if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
            log.warning("Sparkplug: %d DCMD message(s) over commands_per_minute dropped", self.dropped)
        return False

    def resolve(self, book: MetricBook, camera: str, payload) -> list[tuple[str, MetricValue]]:
        """(metric name, written value) of each write in a DCMD, in order; unknown metrics are left out."""
        if camera not in book.devices:
            log.info("Sparkplug: DCMD for unknown camera %r ignored", camera)
            return []
        writes = []
        for m in payload.metrics:
            name = book.written(camera, m.name, m.alias if m.HasField("alias") else None)
            if name is None:
                log.info(
                    "Sparkplug: DCMD for %s names no metric of it (%s); ignored", camera, m.name or m.alias
                )
                continue
            writes.append((name, written_value(m)))
        return writes

    def apply(
        self, camera: str, writes: list[tuple[str, MetricValue]], current: dict[str, MetricValue]
    ) -> dict[str, MetricValue]:
        """Run the actions among ``writes`` ((name, value) in the order sent) for ``camera``;
        ``current`` holds the operator metrics now. Return the metric values to report back."""
        report: dict[str, MetricValue] = {}
        operator = current.get(OPERATOR) or None
        comment = current.get(COMMENT) or None
        for name, value in writes:
            if name in (OPERATOR, COMMENT):
                text = None if value is None else str(value)[:MAX_TEXT].strip() or None
                report[name] = text or ""
                if name == OPERATOR:
                    operator = text
                else:
                    comment = text
                continue
            action = self._action(name, value)
            if action is None:
                log.info("Sparkplug: DCMD write to %s/%s ignored (not a writable metric)", camera, name)
                continue
            command, point, extra = action
            by = (operator or self.default_operator)[:64]
            report[RESULT] = self._run(
                command, {"camera": camera, "point": point, "by": by, "comment": comment, **extra}
            )
            comment = None  # a comment explains one action
            report[COMMENT] = ""
        return report

    def _action(self, name: str, value: MetricValue) -> tuple[str, str, dict[str, Any]] | None:
        parts = split_point_metric(name)
        if parts is None:
            return None
        point, what = parts
        if what == ACKNOWLEDGE and value is True:
            return "ack", point, {}
        if what == SHELVE_MINUTES and isinstance(value, int | float) and not isinstance(value, bool):
            return ("shelve", point, {"minutes": float(value)}) if value != 0 else ("unshelve", point, {})
        return None

    def _run(self, command: str, request: dict[str, Any]) -> str:
        where = f"{request['camera']}/{request['point']}"
        try:
            args = REQUESTS[command].model_validate(request).arguments()
        except ValidationError as exc:
            return f"refused {command} {where}: {describe_errors(exc)}"
        answer = self.run(command, args)
        if not answer.get("ok"):
            return f"refused {command} {where}: {answer.get('error', 'no reason given')}"
        state = answer.get("alarm", {}).get("state", "?")
        return f"{command} {where} by {args['by']}: now {state}"
