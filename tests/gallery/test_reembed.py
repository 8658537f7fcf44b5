"""Model switch: re-embed every stored crop with a new model, then flip atomically."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from devkit.face_shaped import faces_of, identity_centres
from service.errors import Conflict, JobNotFound, ModelMismatch
from service.gallery import Gallery
from service.usecases.ranking import identify_embeddings
from tests.gallery.conftest import faces_for

OLD_DIM, NEW_DIM = 64, 96


class FakeModel:
    """A 'new recognizer': maps each stored crop to its face's new-model embedding.

    The crop's content identifies the face (crops are distinct), which also proves the
    crops came back from the database bit-exact.
    """

    def __init__(self) -> None:
        self.table: dict[str, np.ndarray] = {}
        self.calls = 0
        self.hook = None

    def key(self, crop: np.ndarray) -> str:
        return hashlib.sha256(np.ascontiguousarray(crop).tobytes()).hexdigest()

    def __call__(self, crops: list[np.ndarray]) -> np.ndarray:
        self.calls += 1
        if self.hook is not None:
            hook, self.hook = self.hook, None
            hook()
        return np.stack([self.table[self.key(c)] for c in crops])


@pytest.fixture
def switched_setup(gallery: Gallery):
    """Collection 'c' on m1 with 30 people x 2 faces; new-model embeddings for each crop."""
    gallery.create_collection("c", model="m1")
    n_ids = 30
    owners = np.repeat(np.arange(n_ids), 2)
    old = faces_of(identity_centres(n_ids, OLD_DIM, seed=1), owners, seed=2)
    new_centres = identity_centres(n_ids + 1, NEW_DIM, seed=3)
    new = faces_of(new_centres, np.append(owners, [n_ids]), seed=4)
    model = FakeModel()
    ids = []
    for i in range(n_ids):
        who = gallery.create_identity("c", f"p{i}")
        faces = faces_for(old[2 * i : 2 * i + 2], "m1", start=2 * i)
        for f, k in zip(faces, (2 * i, 2 * i + 1)):
            model.table[model.key(f.crop)] = new[k]
        gallery.enroll("c", who.id, faces)
        ids.append(who.id)
    return gallery, model, ids, new_centres, new


def test_reembed_job_switches_model(switched_setup) -> None:
    g, model, ids, new_centres, new = switched_setup
    before = identify_embeddings(g, "c", "m1", g.get_embeddings("c", ids[0], "m1")[:1], top_k=1)[0]
    assert before.matches[0].identity_id == ids[0]
    job = g.start_reembed_job("c", "m2")
    assert (job.status, job.total, job.params) == ("queued", 60, {"old_model": "m1", "new_model": "m2"})
    with pytest.raises(Conflict):
        g.start_reembed_job("c", "m3")  # one job per collection
    # while queued, the old model keeps serving
    assert (
        identify_embeddings(g, "c", "m1", g.get_embeddings("c", ids[1], "m1")[:1], top_k=1)[0].matches[0].identity_id
        == ids[1]
    )

    done = g.run_reembed_job(job.id, model, batch=16)
    assert done.status == "done" and done.done == done.total == 60 and done.error is None
    assert model.calls == 4  # 60 crops in batches of 16
    coll = g.get_collection("c")
    assert coll.model == "m2"
    # new model serves; old model refused everywhere; old embeddings dropped
    probes = faces_of(new_centres, np.arange(30), seed=99)
    res = identify_embeddings(g, "c", "m2", probes, top_k=1)
    assert np.mean([r.matches[0].identity_id == ids[i] for i, r in enumerate(res)]) >= 0.95
    with pytest.raises(ModelMismatch):
        identify_embeddings(g, "c", "m1", np.ones((1, OLD_DIM), np.float32))
    with pytest.raises(ModelMismatch):
        g.enroll("c", ids[0], faces_for(np.ones((1, OLD_DIM), np.float32), "m1", start=500))
    with pytest.raises(ModelMismatch):
        g.get_embeddings("c", ids[0], "m1")
    assert g.get_embeddings("c", ids[0], "m2").shape == (2, NEW_DIM)
    assert g.list_faces("c", ids[0])[0].models == ("m2",)
    assert g.index_stats("c")["dim"] == NEW_DIM and g.index_stats("c")["ntotal"] == 60
    g.enroll("c", ids[0], faces_for(new[60:61], "m2", start=600))  # new model enrolls
    with pytest.raises(Conflict):
        g.start_reembed_job("c", "m2")  # already active
    assert [j.id for j in g.list_jobs("c")] == [job.id]
    with pytest.raises(JobNotFound):
        g.get_job("nope")


def test_enroll_during_reembed_is_not_lost(switched_setup) -> None:
    g, model, ids, _new_centres, new = switched_setup
    late = faces_for(np.eye(1, OLD_DIM, dtype=np.float32), "m1", start=777)
    model.table[model.key(late[0].crop)] = new[60]
    model.hook = lambda: g.enroll("c", ids[5], late)  # lands after the first batch was read
    job = g.start_reembed_job("c", "m2")
    t = g.start_reembed_thread(job.id, model, batch=8)
    t.join(60)
    final = g.get_job(job.id)
    assert final.status == "done", final.error
    assert final.done == final.total == 61
    assert g.get_collection("c").model == "m2"
    assert g.get_embeddings("c", ids[5], "m2").shape == (3, NEW_DIM)
    assert g.index_stats("c")["ntotal"] == 61


def test_failed_job_leaves_old_model_and_resumes(switched_setup, open_gallery) -> None:
    g, model, _ids, _, _ = switched_setup
    job = g.start_reembed_job("c", "m2")
    calls = {"n": 0}

    def flaky(crops: list[np.ndarray]) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("GPU fell off the bus")
        return model(crops)

    failed = g.run_reembed_job(job.id, flaky, batch=10)
    assert failed.status == "failed" and "GPU fell off" in (failed.error or "")
    assert failed.done == 20 and g.get_collection("c").model == "m1"
    # identify still on m1, complete
    assert g.index_stats("c", "m1")["ntotal"] == 60
    with pytest.raises(Conflict):  # finishing early is refused: 40 faces lack m2
        g.finish_switch("c", "m2")
    # resume (from another process): only the missing 40 are embedded
    other = open_gallery()
    model.calls = 0
    resumed = other.run_reembed_job(job.id, model, batch=10)
    assert resumed.status == "done" and model.calls == 4
    assert g.get_collection("c").model == "m2"
    # the first process follows the switch
    assert g.index_stats("c")["dim"] == NEW_DIM


def test_put_embeddings_and_iter_crops(switched_setup) -> None:
    g, _model, _ids, _, new = switched_setup
    batches = list(g.iter_crops("c", batch=25))
    assert [len(b) for b in batches] == [25, 25, 10]
    fids = [f for b in batches for f, _ in b]
    assert fids == sorted(fids)
    assert (
        g.put_embeddings("m2", {fids[0]: new[0], fids[1]: new[1], 10**9: new[2]}) == 2
    )  # unknown id skipped
    assert sum(len(b) for b in g.iter_crops("c", batch=50, missing_model="m2")) == 58
    with pytest.raises(ModelMismatch):
        g.put_embeddings("m2", {fids[2]: np.ones(NEW_DIM + 1, np.float32)})
    # overwriting embeddings of a model whose index is loaded replaces, never duplicates
    g.put_embeddings("m2", {f: new[i] for i, f in enumerate(fids)})
    assert g.index_stats("c", "m2")["ntotal"] == 60
    g.put_embeddings("m2", {fids[0]: new[5]})
    assert g.index_stats("c", "m2")["ntotal"] == 60
    assert np.array_equal(g.indexed_ids("c", "m2"), np.array(sorted(fids)))
