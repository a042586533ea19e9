"""Pictures for people, drawn with matplotlib from skeletons only (no image ever leaves the device):

- ``appliance maps --keypoints FILE --out sheet.png``: the skeleton maps the model sees, a tile per
  frame titled with its frame number (:func:`draw_map_sheet`);
- ``appliance render-event EVENT.json --out clip.gif``: the skeleton clip an event carries, as a
  stick figure, so a supervisor sees what happened;
- ``appliance zones --config C --camera X --from clip.mp4 --out zones.png``: a camera's zones over a
  heat map of where people stood in a clip, so a technician can check a polygon without a screen on
  the device.

matplotlib is not part of the device install (``pip install 'ceiling-appliance[render]'`` on the
supervisor's machine; the ``[export]`` extra has it too).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from appliance.alarms.events import AnomalyEvent
from appliance.errors import ApplianceError

SEEN = 0.3  # joints less sure than this are not drawn


def read_event(path: Path, event_id: str | None = None) -> AnomalyEvent:
    """One event from a JSON file, or the last with evidence (of ``event_id``) from a JSON-lines file."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ApplianceError(f"cannot read {path}: {exc.strerror}") from None
    try:
        events = [AnomalyEvent.model_validate_json(text)]  # one event, pretty-printed or not
    except ValueError:
        try:
            events = [AnomalyEvent.model_validate_json(line) for line in text.splitlines() if line.strip()]
        except ValueError as exc:
            raise ApplianceError(f"{path} holds no appliance event: {str(exc).splitlines()[0]}") from None
    chosen = [
        e for e in events if e.evidence is not None and (event_id is None or e.event_id.startswith(event_id))
    ]
    if not chosen:
        raise ApplianceError(
            f"{path}: no event with a skeleton clip{' for ' + event_id if event_id else ''} "
            "(clips come with 'start' and 'end' when detector.evidence is 'clip')"
        )
    return chosen[-1]


class ClipDrawing:
    """The figure of one event's clip: ``show(i)`` draws frame ``i``; the limbs are Line2D artists."""

    def __init__(self, event: AnomalyEvent) -> None:
        plt = _pyplot()
        from appliance.alarms.evidence import decode_clip
        from appliance.pose.layouts import BODY_LIMBS

        assert event.evidence is not None
        self.event, self.limbs = event, BODY_LIMBS
        self.times, self.bodies = decode_clip(event.evidence)
        w, h = event.evidence.image_size
        self.fig, self.ax = plt.subplots(figsize=(6, 6 * h / max(w, 1)), dpi=80)
        self.ax.set_xlim(0, w)
        self.ax.set_ylim(h, 0)  # image rows grow downwards
        self.ax.set_aspect("equal")
        self.ax.set_xlabel("image x (pixels)")
        self.ax.set_ylabel("image y (pixels)")
        zone = f", zone {event.zone}" if event.zone else ""
        self.ax.set_title(
            f"camera {event.camera_id}{zone}, person {event.track_id}: anomaly {event.type}\n"
            f"peak score {event.peak_score:.2f} (threshold {event.threshold:.2f})"
        )
        (self.joints,) = self.ax.plot([], [], "o", color="tab:red", markersize=4)
        self.lines = [self.ax.plot([], [], "-", color="tab:blue", linewidth=2)[0] for _ in BODY_LIMBS]
        self.clock = self.ax.text(0.02, 0.02, "", transform=self.ax.transAxes)

    def show(self, i: int) -> list[Any]:
        body = self.bodies[i]
        for line, (a, b) in zip(self.lines, self.limbs, strict=True):
            if min(body[a, 2], body[b, 2]) >= SEEN:
                line.set_data([body[a, 0], body[b, 0]], [body[a, 1], body[b, 1]])
            else:
                line.set_data([], [])
        seen = body[:, 2] >= SEEN
        self.joints.set_data(body[seen, 0], body[seen, 1])
        seconds = (self.times[i] - self.times[-1]) / 1000.0
        self.clock.set_text(f"frame {i + 1} of {len(self.times)}, {seconds:+.1f} s from the event")
        return [*self.lines, self.joints, self.clock]

    def save(self, out: Path) -> int:
        """Write the clip as an animated GIF; returns the frames written."""
        from matplotlib.animation import FuncAnimation, PillowWriter

        if out.suffix.lower() != ".gif":
            raise ApplianceError(f"--out {out}: write a .gif (an animated picture any browser shows)")
        steps = np.diff(self.times)
        fps = 1000.0 / float(np.median(steps)) if len(steps) else 10.0
        anim = FuncAnimation(self.fig, self.show, frames=len(self.times), blit=False)
        out.parent.mkdir(parents=True, exist_ok=True)
        anim.save(str(out), writer=PillowWriter(fps=max(1.0, min(fps, 30.0))))
        return len(self.times)


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ApplianceError(
            "this picture is drawn with matplotlib, which the device install leaves out: "
            "pip install 'ceiling-appliance[render]'"
        ) from None
    return plt


def draw_map_sheet(maps: np.ndarray, picks: np.ndarray, title: str, zoom: float = 1.0):
    """A contact sheet of skeleton maps: one tile per picked frame, titled with its frame number."""
    _pyplot()
    from matplotlib.figure import Figure

    cols = min(10, len(picks))
    rows = int(np.ceil(len(picks) / cols))
    fig = Figure(figsize=(1.1 * cols * zoom, (1.25 * rows + 0.5) * zoom), dpi=100, layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False).ravel())
    for ax in axes:
        ax.set_axis_off()
    for ax, i in zip(axes, picks, strict=False):
        ax.imshow(maps[i], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"frame {int(i)}", fontsize=8)
    fig.suptitle(title, fontsize=9)
    return fig


def foot_points(sequences) -> np.ndarray:
    """(N, 2) feet of every tracked person in every frame, as fractions of the image."""
    from appliance.alarms.zones import foot_point
    from appliance.pose.base import Person

    out = [
        foot_point(Person(kp, seq.layout, Person.box_of(kp), 1.0), (seq.width, seq.height))
        for seq in sequences
        for kp in seq.keypoints
    ]
    return np.asarray(out, dtype=np.float64).reshape(-1, 2)


def draw_zones(zones, points: np.ndarray, title: str, bins: tuple[int, int] = (48, 36)):
    """The figure: foot points as a 2D histogram (people-frames per cell) under the zone outlines."""
    from matplotlib.patches import Polygon

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 6), dpi=90)
    counts, _, _, image = ax.hist2d(
        points[:, 0], points[:, 1], bins=bins, range=[[0, 1], [0, 1]], cmap="Greys", cmin=1
    )
    fig.colorbar(image, ax=ax, label="people-frames standing here")
    for z in zones:
        colour = "tab:green" if z.kind == "include" else "tab:red"
        ax.add_patch(
            Polygon(
                z.polygon, closed=True, fill=False, edgecolor=colour, linewidth=2,
                hatch=None if z.kind == "include" else "//",
                label=f"{z.name} ({z.kind}{'' if z.enabled else ', disabled'})",
            )
        )  # fmt: skip
    ax.set_xlim(0, 1)
    ax.set_ylim(1, 0)  # image rows grow downwards
    ax.set_xlabel("image x (fraction of the width)")
    ax.set_ylabel("image y (fraction of the height)")
    ax.set_title(title)
    if zones:
        ax.legend(loc="upper right", fontsize=8)
    return fig, ax, np.nan_to_num(counts)


def cmd_zones(args: argparse.Namespace) -> int:
    from appliance.config import load_config
    from appliance.pose.extract import extract_tracks
    from appliance.pose.registry import close_engine, create_backend, create_engine

    cfg = load_config(args.config)
    cam = next((c for c in cfg.cameras if c.id == args.camera), None)
    if cam is None:
        raise ApplianceError(
            f"no camera {args.camera!r} in {args.config}; it has {', '.join(c.id for c in cfg.cameras)}"
        )
    if not args.source.is_file():
        raise ApplianceError(f"{args.source}: no such video file")
    engine = create_engine(cfg.pose)
    backend = create_backend(cfg.pose, engine)
    try:
        sequences = extract_tracks(args.source, backend, frames=args.frames, min_length=1)
    finally:
        backend.close()
        close_engine(engine)
    points = foot_points(sequences)
    title = f"camera {cam.id}: where people stood ({len(points)} foot points from {args.source.name})"
    fig, _, _ = draw_zones(list(cam.zones), points, title)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(f"{args.out}: {len(cam.zones)} zone(s) over {len(points)} foot points of {len(sequences)} people")
    return 0


def cmd_render_event(args: argparse.Namespace) -> int:
    event = read_event(args.event, args.event_id)
    frames = ClipDrawing(event).save(args.out)
    who = f"camera {event.camera_id}, person {event.track_id}"
    print(f"{args.out}: {frames} frames of {who}, anomaly {event.type}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register this module's subcommands."""
    p = sub.add_parser("render-event", help="draw the skeleton clip of an anomaly event as an animated GIF")
    p.add_argument(
        "event", type=Path, help="an event (.json) or an event file (.jsonl: the last with a clip)"
    )
    p.add_argument("--out", type=Path, required=True, help="the GIF to write")
    p.add_argument("--event-id", help="in a .jsonl file: this event (its id or the start of it)")
    p.set_defaults(func=cmd_render_event)

    p = sub.add_parser("zones", help="draw a camera's zones over where people stood in a clip (PNG)")
    p.add_argument("--config", type=Path, required=True, help="the appliance configuration with the zones")
    p.add_argument("--camera", required=True, help="camera id")
    p.add_argument("--from", dest="source", type=Path, required=True, help="a video file from that camera")
    p.add_argument("--out", type=Path, required=True, help="the PNG to write")
    p.add_argument("--frames", type=int, help="frames to read (default: all)")
    p.set_defaults(func=cmd_zones)
