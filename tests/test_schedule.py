"""ArrivalSchedule: free-running it records whose result was consumed; replayed it consumes in that order."""
import pytest

from unirl.conformance.workers import Echo
from unirl.errors import UnirlError
from unirl.execution import ArrivalSchedule


def consume(backend, workers, schedule, steps, delays=(0.0, 0.0)):
    pending = {w.worker_id: backend.call(w, "sleep", delays[w.worker_id], 0) for w in workers}
    out = []
    for step in range(steps):
        wid = schedule.next(pending)
        out.append((wid, backend.get(pending.pop(wid))))
        pending[wid] = backend.call(workers[wid], "sleep", delays[wid], step + 1)
    backend.get(list(pending.values()))
    return out


@pytest.mark.timeout(120)
def test_records_arrival_order_and_replays_it_on_another_backend():
    from unirl.backends import get_backend

    with get_backend("multiprocessing") as mp:
        workers = mp.spawn(Echo, [(), ()])
        schedule = ArrivalSchedule(mp)
        free = consume(mp, workers, schedule, 12, delays=(0.05, 0.001))
    assert schedule.recorded == [w for w, _ in free]
    assert schedule.recorded.count(1) > schedule.recorded.count(0), "the fast worker should arrive more often"
    with get_backend("local") as local:
        workers = local.spawn(Echo, [(), ()])
        replay = ArrivalSchedule(local, replay=schedule.recorded)
        again = consume(local, workers, replay, 12)
    assert again == free


def test_replay_errors_are_one_sentence():
    from unirl.backends import get_backend

    with get_backend("local") as local:
        workers = local.spawn(Echo, [()])
        with pytest.raises(UnirlError, match="ends after 2 results"):
            consume(local, workers, ArrivalSchedule(local, replay=[0, 0]), 3)
        with pytest.raises(UnirlError, match="wants worker 5's result at step 0"):
            consume(local, workers, ArrivalSchedule(local, replay=[5]), 1)
