"""On site: ``appliance calibrate`` learns where "normal" ends for one camera (:mod:`.run`,
:mod:`.thresholds`, :mod:`.store`, :mod:`.report`); ``appliance learn`` fits the camera's own site
model from its footage (:mod:`.learn`). Uses the service's public API (the daemon), never the reverse."""
