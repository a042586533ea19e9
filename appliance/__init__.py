"""Edge appliance. The data flow, one package per stage: capture -> pose -> tracking -> features ->
models -> alarms -> publish; beside it, model updates (updates) and the service that runs it all
(service). ``docs/architecture.md`` says where each concern lives."""

import os

__version__ = "0.1.0"

# numpy's OpenBLAS keeps a busy-waiting worker thread per core after each matrix product; the
# appliance's only products are the small skeleton-map resizes, and its cores belong to pose and
# scoring. Measured on 2 cores, 1 camera at 30 fps: 1.72 cores busy with the default, 0.72 with one
# BLAS thread (same latency). Must be set before numpy is first imported; a user's setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
