"""Publishing: where events go (sinks keyed on ``type``: stdout, JSON lines, MQTT; :mod:`.sinks`), the
MQTT link with its on-disk outbox (:mod:`.mqtt`, :mod:`.outbox`), the command channel
(:mod:`.commands`) and Sparkplug B (:mod:`.sparkplug`). Only skeletons, scores and metadata leave."""
