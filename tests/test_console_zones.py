"""Zones saved in the web console (``<state_dir>/zones.yaml``) replace the configuration file's zones
of the cameras they name, for the daemon and for every reload; the file itself is never written."""

from __future__ import annotations

import pytest

from appliance.config import ConfigError, load_config
from appliance.config.console_zones import (
    CameraZoneEdit,
    ConsoleZones,
    read_console_zones,
    write_console_zones,
)
from tests.conftest import write_appliance_config

SQUARE = [[0.1, 0.1], [0.9, 0.1], [0.9, 0.9], [0.1, 0.9]]


def _two_cameras(tmp_path):
    cams = [
        {"id": "a", "source": "rtsp://192.0.2.1/x", "zones": [{"name": "file-zone", "polygon": SQUARE}]},
        {"id": "b", "source": "rtsp://192.0.2.2/x", "zones": [{"name": "keep", "polygon": SQUARE}]},
    ]
    return write_appliance_config(tmp_path / "c.yaml", cams[0], cameras=cams)


def test_a_camera_saved_in_the_console_takes_those_zones_and_the_others_keep_the_files(tmp_path):
    config = _two_cameras(tmp_path)
    text = config.read_text()
    edit = CameraZoneEdit(
        zones=[{"name": "press", "kind": "exclude", "polygon": SQUARE, "min_dwell_s": 2}],
        saved_by="ada", saved_at="2026-12-03T08:00:00Z",
    )  # fmt: skip
    write_console_zones(tmp_path / "state", ConsoleZones(cameras={"a": edit, "gone": edit}))
    cfg = load_config(config)
    zones = {c.id: [(z.name, z.kind, z.min_dwell_s) for z in c.zones] for c in cfg.cameras}
    assert zones == {"a": [("press", "exclude", 2.0)], "b": [("keep", "include", 0.0)]}
    assert [z.name for z in load_config(config, console_zones=False).cameras[0].zones] == ["file-zone"]
    assert config.read_text() == text  # the configuration file is never written
    saved = (tmp_path / "state" / "zones.yaml").read_text()
    assert saved.startswith("# Zones saved from the web console.") and "saved_by: ada" in saved
    assert read_console_zones(tmp_path / "state") == ConsoleZones(cameras={"a": edit, "gone": edit})


def test_an_empty_list_saved_in_the_console_means_no_zones_for_that_camera(tmp_path):
    config = _two_cameras(tmp_path)
    edit = CameraZoneEdit(zones=[], saved_by="ada", saved_at="2026-12-03T08:00:00Z")
    write_console_zones(tmp_path / "state", ConsoleZones(cameras={"b": edit}))
    cfg = load_config(config)
    assert [len(c.zones) for c in cfg.cameras] == [1, 0]


def test_a_zones_file_that_breaks_the_rules_is_refused_naming_file_line_and_key(tmp_path):
    config = _two_cameras(tmp_path)
    path = tmp_path / "state" / "zones.yaml"
    path.parent.mkdir()
    path.write_text(
        "schema_version: 1\ncameras:\n  a:\n    saved_by: ada\n    saved_at: now\n    zones:\n"
        "    - name: x\n      polygon: [[0, 0], [1.5, 0], [1, 1]]\n      kind: inclde\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(config)
    lines = str(err.value).splitlines()
    assert f"{path}:8: cameras.a.zones[0].polygon[1][0]: out of range: must be from 0 to 1 (got 1.5)" in lines
    assert any(x.startswith(f"{path}:9: cameras.a.zones[0].kind: ") and "'include'" in x for x in lines)
    no_author = "schema_version: 1\ncameras:\n  a:\n    zones: [{name: x, polygon: [[0, 0], [1, 0], [1, 1]]}]"
    path.write_text(no_author + "\n")
    with pytest.raises(ConfigError, match=r"zones.yaml:3: cameras.a.saved_by: required key is missing"):
        load_config(config)


def test_zone_names_stay_unique_per_camera_in_the_console_as_in_the_file(tmp_path):
    with pytest.raises(ValueError, match="repeated: z"):
        CameraZoneEdit(zones=[{"name": "z", "polygon": SQUARE}] * 2, saved_by="ada", saved_at="now")
