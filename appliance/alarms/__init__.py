"""Alarms: window scores to anomaly events per track (start, updates, end; :mod:`.detector`), the
event payloads and their JSON Schemas (:mod:`.events`), and the journal that ends anomalies left open
by a crash (:mod:`.journal`)."""
