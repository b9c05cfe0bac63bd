"""The worker: `Worker` and its parts (one module per concern).

- `teguh.worker._worker`: `Worker` (configuration, lifecycle, `Worker.drain`);
- `teguh.worker.dispatcher`: when to claim which queue's runs;
- `teguh.worker.listener`: the one LISTEN connection and the ticker election;
- `teguh.worker.executor`: routing and the middleware chain;
- `teguh.worker.completions`: recording outcomes (completions in batches);
- `teguh.worker.heartbeat`: lease extension and cancellation notices;
- `teguh.worker.signals`: the signal policy of `Worker.run`;
- `teguh.worker.warmup`: warming each new pool connection.
"""

from __future__ import annotations

from teguh.worker._worker import STOP_GRACE, Worker
from teguh.worker.executor import Handler, NotFound

__all__ = ["STOP_GRACE", "Handler", "NotFound", "Worker"]
