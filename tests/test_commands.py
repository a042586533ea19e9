"""The MQTT command channel against a real mosquitto: floods, huge payloads, bad fields, signatures.

The link is a real :class:`MqttLink`; commands are sent by a real paho client or ``mosquitto_pub``.
The handler behind the link is :class:`Recorder`, standing in for ``Appliance.command`` (a daemon
needs a camera for minutes; ``tests/test_daemon.py`` drives the real one over MQTT): it records the
arguments it receives and converts them the way the daemon does.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from appliance.config import MqttSinkConfig
from appliance.publish.commands import BURST, sign, split_signature
from appliance.publish.mqtt import MqttLink

from .conftest import ROOT, Broker, make_broker
from .test_mqtt import Collector, event, in_order_without_duplicates

BASE = "appliance/box1"
SECRET = "correct-horse-battery-staple-42"
DOC = ROOT / "docs" / "mqtt.md"


class Recorder:
    """The command handler: records (name, arguments); ``recalibrate`` waits for ``release``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.release = threading.Event()
        self.release.set()

    def __call__(self, name: str, request: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((name, request))
        if name == "recalibrate":
            minutes = float(request.get("minutes", 3.0))  # as Appliance.command converts it
            if request.get("camera") == "crash":
                raise RuntimeError("the handler failed")
            self.release.wait(60)
            return {"ok": True, "camera": request.get("camera"), "minutes": minutes}
        return {"ok": True}


def command_link(broker: Broker, state: Path, handler: Recorder, **kw) -> MqttLink:
    """A link with commands on; a roomy rate (tests send a few in a row) unless ``kw`` says otherwise."""
    kw.setdefault("commands_per_minute", 600)
    cfg = MqttSinkConfig(host=broker.host, port=broker.port, reconnect_max_s=1.0, commands=True, **kw)
    return MqttLink(cfg, "box1", state, commands=handler)


def sender(broker: Broker) -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="operator", protocol=mqtt.MQTTv311)
    client.connect(broker.host, broker.port)
    client.loop_start()
    return client


def answers(sub: Collector, name: str) -> list[dict[str, Any]]:
    return [json.loads(p) for t, p in list(sub.messages) if t == f"{BASE}/cmd/{name}/response"]


def ask(client: mqtt.Client, sub: Collector, name: str, payload: bytes | str, timeout: float = 30.0) -> dict:
    """Send one command and return its answer (the first new one on its response topic)."""
    before = len(answers(sub, name))
    client.publish(f"{BASE}/cmd/{name}", payload, qos=1).wait_for_publish(10)
    deadline = time.monotonic() + timeout
    while len(answers(sub, name)) <= before and time.monotonic() < deadline:
        time.sleep(0.05)
    got = answers(sub, name)
    assert len(got) > before, f"no answer to {name}"
    return got[before]


def wait_subscribed(client: mqtt.Client, sub: Collector) -> None:
    """Commands are heard once the link has subscribed: ask ``status`` until it answers."""
    deadline = time.monotonic() + 20
    while not answers(sub, "status"):
        assert time.monotonic() < deadline, "the link never answered status"
        client.publish(f"{BASE}/cmd/status", b"{}", qos=1)
        time.sleep(0.5)


def test_a_flood_of_junk_commands_delays_no_event_and_is_not_answered_or_logged_one_by_one(
    tmp_path, broker: Broker, caplog
):
    caplog.set_level(logging.INFO, logger="appliance.mqtt")
    sub = Collector(broker)
    out = command_link(broker, tmp_path / "state", Recorder(), commands_per_minute=30)  # the default
    op = sender(broker)
    junk = [
        ("status", b"not json"),
        ("recalibrate", b'{"minutes": "abc"}'),
        ("reload", b"[1, 2, 3]"),
        ("explode", b"{}"),
        ("status", b'{"request_id": "flood"}'),
    ]
    flooded = threading.Event()

    def flood() -> None:
        for i in range(20_000):
            name, payload = junk[i % len(junk)]
            op.publish(f"{BASE}/cmd/{name}", payload, qos=0)
        flooded.set()

    try:
        assert out.connected.wait(10)
        wait_subscribed(op, sub)
        answered_before = sum(1 for t, _ in sub.messages if t.endswith("/response"))
        threading.Thread(target=flood, daemon=True).start()
        for i in range(200):  # events at a steady rate during the flood...
            out.publish(event(i))
            time.sleep(0.01)
        assert flooded.wait(60)
        for i in range(200, 250):  # ...and after it: the link keeps delivering
            out.publish(event(i))
        got = sub.wait_for(set(range(250)), timeout=60)
        time.sleep(1.0)  # answers to the flood, if any were to come
    finally:
        out.close()
        op.loop_stop()
        op.disconnect()
        sub.close()
    assert in_order_without_duplicates(got) == list(range(250))
    flood_answers = sum(1 for t, _ in sub.messages if t.endswith("/response")) - answered_before
    assert flood_answers <= BURST + 20  # the rate limit answers a few; the rest are dropped
    channel = out._commands
    assert channel.received > 1000 and channel.dropped >= channel.received - 50  # all but a few dropped
    assert len([r for r in caplog.records if "command" in r.getMessage()]) < 60  # summaries, not 20,000
    assert "Traceback" not in caplog.text


def test_an_oversized_command_is_refused_by_its_size_and_neither_stored_nor_echoed(
    tmp_path, broker: Broker, caplog
):
    caplog.set_level(logging.INFO, logger="appliance.mqtt")
    sub = Collector(broker)
    handler = Recorder()
    out = command_link(broker, tmp_path / "state", handler)
    op = sender(broker)
    huge = json.dumps({"request_id": "x" * 2_000_000}).encode()  # 2 MB
    try:
        assert out.connected.wait(10)
        wait_subscribed(op, sub)
        calls = len(handler.calls)
        reply = ask(op, sub, "status", huge)
        time.sleep(0.5)
    finally:
        out.close()
        op.loop_stop()
        op.disconnect()
        sub.close()
    assert reply["ok"] is False and "bytes" in reply["error"] and "commands_max_bytes" in reply["error"]
    assert reply["request_id"] is None
    largest = max(len(p) for t, p in sub.messages if t.endswith("/response"))
    assert largest < 1000  # the request was not echoed
    assert len(handler.calls) == calls  # not run
    state = tmp_path / "state"
    assert sum(f.stat().st_size for f in state.iterdir()) < 500_000  # not stored in the outbox either
    assert len(caplog.text) < 20_000  # nor logged


def test_invalid_fields_are_answered_ok_false_naming_the_field_and_the_handler_gets_typed_values(
    tmp_path, broker: Broker, caplog
):
    caplog.set_level(logging.INFO, logger="appliance.mqtt")
    sub = Collector(broker)
    handler = Recorder()
    out = command_link(broker, tmp_path / "state", handler)
    op = sender(broker)
    try:
        assert out.connected.wait(10)
        wait_subscribed(op, sub)
        bad = ask(op, sub, "recalibrate", b'{"request_id": "r1", "camera": "cam1", "minutes": "abc"}')
        unknown = ask(op, sub, "recalibrate", b'{"camera": "cam1", "minuets": 3}')
        negative = ask(op, sub, "recalibrate", b'{"camera": "cam1", "minutes": -1}')
        not_object = ask(op, sub, "reload", b"[1]")
        good = ask(op, sub, "recalibrate", b'{"request_id": "r2", "camera": "cam1", "minutes": 2}')
        crash = ask(op, sub, "recalibrate", b'{"camera": "crash"}')
    finally:
        out.close()
        op.loop_stop()
        op.disconnect()
        sub.close()
    assert bad["ok"] is False and bad["request_id"] == "r1" and "minutes" in bad["error"]
    assert unknown["ok"] is False and "minuets: unknown field" in unknown["error"]
    assert (
        negative["ok"] is False and "minutes" in negative["error"] and "greater than 0" in negative["error"]
    )
    assert not_object["ok"] is False and "not a JSON object" in not_object["error"]
    assert good == {**good, "ok": True, "request_id": "r2", "minutes": 2.0}
    assert crash["ok"] is False and crash["error"] == "internal error: RuntimeError: the handler failed"
    recalibrations = [args for name, args in handler.calls if name == "recalibrate"]
    assert recalibrations[0] == {
        "camera": "cam1",
        "minutes": 2.0,
        "target_alarms_per_hour": 0.125,
        "accept_drift": False,
    }  # only the valid ones reached the handler, with floats
    assert len(recalibrations) == 2
    assert "Traceback" not in caplog.text
    assert "MQTT command recalibrate failed: RuntimeError: the handler failed" in caplog.text


def test_with_a_secret_only_a_correctly_signed_recalibrate_is_run(tmp_path, broker: Broker, caplog):
    caplog.set_level(logging.INFO, logger="appliance.mqtt")
    secret_file = tmp_path / "command-secret"
    secret_file.write_text(SECRET + "\n")
    sub = Collector(broker)
    handler = Recorder()
    out = command_link(broker, tmp_path / "state", handler, command_secret_file=secret_file)
    op = sender(broker)
    topic = f"{BASE}/cmd/recalibrate"
    request = {"request_id": "r1", "camera": "cam1", "minutes": 1}
    try:
        assert out.connected.wait(10)
        wait_subscribed(op, sub)  # status needs no signature
        unsigned = ask(op, sub, "recalibrate", json.dumps(request))
        wrong_key = ask(op, sub, "recalibrate", sign(b"not-the-secret-at-all", topic, request))
        signed = sign(SECRET.encode(), topic, request)
        body, sig = split_signature(signed)
        tampered = ask(op, sub, "recalibrate", body.replace(b'"minutes":1', b'"minutes":9')[:-1]
                       + b',"sig":"' + sig.encode() + b'"}')  # fmt: skip
        other_command = ask(op, sub, "reload", signed)  # signed for recalibrate, sent to reload
        accepted = ask(op, sub, "recalibrate", signed)
    finally:
        out.close()
        op.loop_stop()
        op.disconnect()
        sub.close()
    assert unsigned["ok"] is False and "must be signed" in unsigned["error"]
    assert wrong_key["ok"] is False and "bad signature" in wrong_key["error"]
    assert tampered["ok"] is False and "bad signature" in tampered["error"]
    assert other_command["ok"] is False and "bad signature" in other_command["error"]
    assert accepted["ok"] is True and accepted["request_id"] == "r1"
    assert [n for n, _ in handler.calls if n != "status"] == ["recalibrate"]
    assert SECRET not in caplog.text


def test_a_replayed_or_stale_signed_command_is_refused(tmp_path, broker: Broker):
    secret_file = tmp_path / "command-secret"
    secret_file.write_text(SECRET)
    sub = Collector(broker)
    handler = Recorder()
    out = command_link(broker, tmp_path / "state", handler, command_secret_file=secret_file)
    op = sender(broker)
    topic = f"{BASE}/cmd/reload"
    try:
        assert out.connected.wait(10)
        wait_subscribed(op, sub)
        signed = sign(SECRET.encode(), topic, {"request_id": "once"})
        first = ask(op, sub, "reload", signed)
        replayed = ask(op, sub, "reload", signed)
        stale = ask(op, sub, "reload", sign(SECRET.encode(), topic, {}, now=time.time() - 600))
    finally:
        out.close()
        op.loop_stop()
        op.disconnect()
        sub.close()
    assert first["ok"] is True
    assert replayed["ok"] is False and "nonce was used already" in replayed["error"]
    assert stale["ok"] is False and "command_max_age_s" in stale["error"]
    assert [n for n, _ in handler.calls if n == "reload"] == ["reload"]


def test_a_running_recalibration_does_not_hold_up_other_commands_and_a_second_is_refused_busy(
    tmp_path, broker: Broker
):
    sub = Collector(broker)
    handler = Recorder()
    out = command_link(broker, tmp_path / "state", handler)
    op = sender(broker)
    try:
        assert out.connected.wait(10)
        wait_subscribed(op, sub)
        handler.release.clear()  # the recalibration blocks (as a real one does, for minutes)
        op.publish(f"{BASE}/cmd/recalibrate", b'{"camera": "cam1", "minutes": 1}', qos=1)
        deadline = time.monotonic() + 10
        while not any(n == "recalibrate" for n, _ in handler.calls) and time.monotonic() < deadline:
            time.sleep(0.05)
        status = ask(op, sub, "status", b'{"request_id": "meanwhile"}')
        second = ask(op, sub, "recalibrate", b'{"camera": "cam1", "minutes": 1}')
        handler.release.set()
        deadline = time.monotonic() + 10
        while len(answers(sub, "recalibrate")) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        handler.release.set()
        out.close()
        op.loop_stop()
        op.disconnect()
        sub.close()
    assert status["ok"] is True and status["request_id"] == "meanwhile"
    assert second["ok"] is False and "busy" in second["error"]
    assert [a["ok"] for a in answers(sub, "recalibrate")] == [False, True]


def doc_block(heading: str, lang: str, nth: int = 0) -> str:
    """The ``nth`` fenced ``lang`` block after ``heading`` in docs/mqtt.md, as integrators will copy it."""
    text = DOC.read_text()
    text = text[text.index(heading) :]
    return text.split(f"```{lang}\n")[nth + 1].split("```")[0]


def test_the_documented_signing_recipes_produce_commands_the_appliance_runs(tmp_path, broker: Broker):
    (tmp_path / "command-secret").write_text(SECRET + "\n")
    sub = Collector(broker)
    handler = Recorder()
    out = command_link(broker, tmp_path / "state", handler, command_secret_file=tmp_path / "command-secret")
    op = sender(broker)

    def as_here(snippet: str) -> str:
        return (
            snippet.replace("BROKER", f"{broker.host} -p {broker.port}")
            .replace("line3-box", "box1")
            .replace("line3-east", "cam1")
            .replace("python -m", f"{sys.executable} -m")
        )

    try:
        assert out.connected.wait(10)
        wait_subscribed(op, sub)
        for n, recipe in enumerate(
            [doc_block("With the appliance package", "sh"), doc_block("or in a shell", "sh")]
        ):
            subprocess.run(
                ["bash", "-euo", "pipefail", "-c", as_here(recipe)], cwd=tmp_path, check=True, timeout=30
            )
            deadline = time.monotonic() + 20
            while len(answers(sub, "recalibrate")) <= n and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        out.close()
        op.loop_stop()
        op.disconnect()
        sub.close()
    assert [(a["ok"], a["request_id"]) for a in answers(sub, "recalibrate")] == [(True, "r1"), (True, "r1")]
    assert [a for n, a in handler.calls if n == "recalibrate"] == [
        {"camera": "cam1", "minutes": 3.0, "target_alarms_per_hour": 0.125, "accept_drift": False}
    ] * 2


def test_the_documented_broker_acl_lets_only_the_operator_command_the_appliance(tmp_path):
    passwords = tmp_path / "passwd"
    for i, user in enumerate(["appliance-line3", "scada-operator", "dashboard"]):
        create = ["-c"] if i == 0 else []
        subprocess.run(["mosquitto_passwd", *create, "-b", str(passwords), user, f"pw-{user}"], check=True)
    os.chmod(passwords, 0o600)
    acl = tmp_path / "acl"
    acl.write_text(doc_block("**Who may command.**", "text").replace("line3-box", "box1"))
    os.chmod(acl, 0o600)
    broker = make_broker(
        tmp_path / "broker", f"allow_anonymous false\npassword_file {passwords}\nacl_file {acl}\n"
    )
    (tmp_path / "pw").write_text("pw-appliance-line3\n")
    handler = Recorder()
    out = command_link(
        broker, tmp_path / "state", handler, username="appliance-line3", password_file=tmp_path / "pw"
    )
    got: list[tuple[str, bytes]] = []
    clients = {}
    for user in ["scada-operator", "dashboard"]:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=user, protocol=mqtt.MQTTv311)
        c.username_pw_set(user, "pw-" + user)
        c.on_message = lambda c, u, m: got.append((m.topic, m.payload))
        c.connect(broker.host, broker.port)
        c.loop_start()
        clients[user] = c
    try:
        assert out.connected.wait(10)
        clients["dashboard"].subscribe(f"{BASE}/cmd/+/response", qos=1)
        deadline = time.monotonic() + 20
        while not any(t.endswith("status/response") for t, _ in got):  # the link is subscribed
            assert time.monotonic() < deadline, "the operator's status was never answered"
            clients["scada-operator"].publish(f"{BASE}/cmd/status", b"{}", qos=1)
            time.sleep(0.5)
        for user in ["dashboard", "scada-operator"]:  # the broker drops the dashboard's silently
            payload = json.dumps({"request_id": user, "camera": "cam1", "minutes": 1})
            clients[user].publish(f"{BASE}/cmd/recalibrate", payload, qos=1).wait_for_publish(10)
        deadline = time.monotonic() + 20
        while not any(t.endswith("recalibrate/response") for t, _ in got) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
    finally:
        out.close()
        for c in clients.values():
            c.loop_stop()
            c.disconnect()
        broker.stop()
    responses = [json.loads(p) for t, p in got if t.endswith("recalibrate/response")]
    assert [r["request_id"] for r in responses] == ["scada-operator"]
    assert [n for n, _ in handler.calls if n == "recalibrate"] == ["recalibrate"]
