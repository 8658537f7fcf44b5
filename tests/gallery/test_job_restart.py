"""A model-switch job whose process dies is failed and resumable at the next start, at once
(not after a timeout), while a job of a live process, wherever it runs, is never taken over.

The restart is real: a child process runs the job with a slow embedder and is killed with
SIGKILL mid-job; the test process then opens the same database as a restarted service would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from service.errors import Conflict
from service.gallery import Gallery
from service.gallery.jobs import HEARTBEAT_TIMEOUT, owner_alive, process_owner
from tests.gallery.conftest import faces_for

N_FACES = 24
REPO = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from service.config import Settings
    from service.gallery import Gallery

    g = Gallery(Settings(data_dir=sys.argv[2], database_url=sys.argv[1], index_use_gpu=False,
                         sqlite_synchronous="NORMAL")).start()
    job = g.start_reembed_job("c", "m2")
    print(job.id, flush=True)

    def slow(crops):  # about 12 s for the whole collection: the parent kills it long before
        time.sleep(1.0)
        return np.ones((len(crops), 8), np.float32)

    g.run_reembed_job(job.id, slow, batch=2)
    """
)


@pytest.fixture
def collection(gallery: Gallery) -> Gallery:
    gallery.create_collection("c", model="m1")
    who = gallery.create_identity("c", "p0")
    vecs = np.random.default_rng(0).standard_normal((N_FACES, 8)).astype(np.float32)
    gallery.enroll("c", who.id, faces_for(vecs, "m1"))
    return gallery


def _start_child(gallery: Gallery, tmp_path: Path) -> tuple[subprocess.Popen, str]:
    url = gallery.settings.resolved_database_url
    child = subprocess.Popen([sys.executable, "-c", CHILD, url, str(tmp_path / "child")], cwd=REPO,
                             stdout=subprocess.PIPE, text=True)
    job_id = child.stdout.readline().strip()  # type: ignore[union-attr]
    assert job_id, "the child did not start its job"
    deadline = time.monotonic() + 60
    while gallery.get_job(job_id).done < 4:  # it is running, and has written some embeddings
        assert child.poll() is None and time.monotonic() < deadline, "the child job made no progress"
        time.sleep(0.1)
    return child, job_id


def test_killed_owner_is_failed_at_once_and_the_job_resumes(collection: Gallery, open_gallery, tmp_path) -> None:
    child, job_id = _start_child(collection, tmp_path)
    try:
        # A second process starting while the owner lives must leave its job alone.
        other = open_gallery()
        assert other.interrupted_jobs == []
        assert other.get_job(job_id).status == "running"
        with pytest.raises(Conflict):
            other.start_reembed_job("c", "m2")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    killed_at = time.monotonic()
    done_before = collection.get_job(job_id).done
    assert collection.get_job(job_id).status == "running"  # what the dead process left behind

    restarted = open_gallery()  # what a restarted service does at start
    job = restarted.get_job(job_id)
    assert [j.id for j in restarted.interrupted_jobs] == [job_id]
    assert job.status == "failed" and job.error.startswith("interrupted"), job
    assert time.monotonic() - killed_at < HEARTBEAT_TIMEOUT.total_seconds()  # a dead pid, not a timeout

    embedded: list[int] = []

    def fast(crops: list[np.ndarray]) -> np.ndarray:
        embedded.append(len(crops))
        return np.ones((len(crops), 8), np.float32)

    done = restarted.run_reembed_job(job_id, fast, batch=4)
    assert done.status == "done" and done.done == done.total == N_FACES
    assert restarted.get_collection("c").model == "m2"
    assert sum(embedded) == N_FACES - done_before  # resumed: the dead process's work was kept


def test_a_new_switch_takes_over_from_a_dead_owner(collection: Gallery, open_gallery, tmp_path) -> None:
    child, job_id = _start_child(collection, tmp_path)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    # No restart in between (another replica serves the request): the switch is not blocked.
    job = collection.start_reembed_job("c", "m2")
    assert job.id != job_id and collection.get_job(job_id).status == "failed"


def test_owner_liveness_rules() -> None:
    """Hand-made owners: the rules of service/gallery/jobs.py, case by case."""
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    fresh, stale = now - timedelta(seconds=2), now - HEARTBEAT_TIMEOUT - timedelta(seconds=1)
    me = process_owner()
    host, pid, _ = me.split(":")
    dead_pid = 2**22 + 12345  # above Linux's pid_max default: never a live process
    assert owner_alive(me, stale, now, me)  # this very process
    assert not owner_alive(f"{host}:{pid}:earlier", fresh, now, me)  # an earlier life of this pid
    assert not owner_alive(f"{host}:{dead_pid}:x", fresh, now, me)  # gone from this host
    assert owner_alive(f"{host}:{os.getppid()}:x", fresh, now, me)  # a live neighbour that beats
    assert not owner_alive(f"{host}:{os.getppid()}:x", stale, now, me)  # ... that stopped beating
    assert owner_alive("elsewhere:1:x", fresh, now, me)  # another host: only the heartbeat can tell
    assert not owner_alive("elsewhere:1:x", stale, now, me)
    assert not owner_alive(None, None, now, me)
