"""Per-thread state shared by the wrappers and the recorder."""

from __future__ import annotations

import threading

# The last prediction record of each thread, for last_prediction_id() outside a context.
_tls = threading.local()
