"""The JSON Schemas shipped for integrators are the ones the code's payload models generate."""

from __future__ import annotations

import json

from appliance.alarms.events import json_schemas

from .conftest import ROOT


def test_shipped_schemas_match_the_payload_models():
    for name, schema in json_schemas().items():
        shipped = json.loads((ROOT / "docs" / "schemas" / f"{name}.schema.json").read_text())
        assert shipped == schema, f"docs/schemas/{name}.schema.json is stale: run `appliance schemas`"
