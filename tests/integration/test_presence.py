"""Worker presence: a running worker registers itself and leaves when it stops."""

from __future__ import annotations

import teguh


def test_a_running_worker_is_present_until_it_stops(app: teguh.App, queue: str) -> None:
    worker = app.worker([queue], poll_interval=30, worker_id="w-presence")
    with worker:
        (present,) = app.client.list_workers(queue)
        assert (present.worker_id, present.queues) == ("w-presence", [queue])
        assert present.pid is not None and present.host
        assert app.client.queue_workers(queue) == {queue: 1}
    assert app.client.list_workers(queue) == []
