"""Store and forward for the Sparkplug edge node: the metric changes made while no primary host (or no
broker) listened, kept on disk in the same bounded outbox as the JSON link's events, and sent after
the next births as NDATA/DDATA with ``is_historical = true`` and their original timestamps.

A record keeps metric *names*, not aliases: aliases belong to the births of a session, and a record
may be replayed after a restart or after a reload changed the metrics; a metric the node no longer
has is left out when its record is sent.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from appliance.config.sparkplug import SparkplugSinkConfig
from appliance.publish.outbox import Outbox
from appliance.publish.sparkplug.payload import MetricValue

log = logging.getLogger("appliance.sparkplug.node")

NODE_TOPIC = "NDATA"


@dataclass(frozen=True)
class StoredChange:
    """One stored message: whose metrics (None: the node's), ``(name, value, timestamp)`` triples."""

    id: int
    device: str | None
    metrics: list[tuple[str, MetricValue, int]]


class History:
    """The on-disk store of metric changes that wait for a primary host or a broker."""

    def __init__(self, path: Path | None, cfg: SparkplugSinkConfig) -> None:
        # without a state directory (tests, one-off tools) the store lives in memory
        self.outbox = Outbox(
            path or Path(":memory:"),
            cfg.outbox_max_messages,
            cfg.outbox_max_age_s,
            max_bytes=cfg.outbox_max_bytes,
        )
        if self.outbox.depth():
            log.info("Sparkplug: %d stored message(s) from before follow the births", self.outbox.depth())

    def put(
        self,
        device: str | None,
        metrics: list[tuple[str, MetricValue, int]],
        kind: str = "update",
        key: str | None = None,
    ) -> None:
        """Keep one message's changes; ``kind``/``key`` decide what a full store drops first
        (``start``/``end`` of one anomaly leave together, updates before them)."""
        topic = NODE_TOPIC if device is None else f"DDATA/{device}"
        body = {"metrics": [[n, v, ts] for n, v, ts in metrics]}
        if key is not None:
            body["event_id"] = key
        self.outbox.put(topic, json.dumps(body, separators=(",", ":")), kind, key=key)

    def after(self, last_id: int, limit: int) -> list[StoredChange]:
        """The next ``limit`` stored messages after ``last_id``, oldest first."""
        out = []
        for msg in self.outbox.after(last_id, limit):
            device = None if msg.topic == NODE_TOPIC else msg.topic.split("/", 1)[1]
            metrics = [(str(n), v, int(ts)) for n, v, ts in json.loads(msg.payload)["metrics"]]
            out.append(StoredChange(msg.id, device, metrics))
        return out

    def sent(self, change_id: int) -> None:
        """The message went out: forget it."""
        self.outbox.ack(change_id)

    def depth(self) -> int:
        return self.outbox.depth()

    def close(self) -> None:
        self.outbox.close()
