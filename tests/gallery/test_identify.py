"""Enroll -> identify on synthetic clustered embeddings, thresholds, deletes, restarts,
model/dimension mismatches and the approximate index's recall."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from devkit.face_shaped import gallery as synth_gallery
from devkit.face_shaped import probes
from service.errors import InvalidRequest, ModelMismatch
from service.gallery import Gallery
from service.gallery.faiss_index import FaissIndex, IndexParams
from service.usecases.ranking import identify_embeddings
from tests.gallery.conftest import faces_for

DIM = 128
THRESHOLD = 0.48  # 128-d synthetic: genuine best ~0.55-0.85, strangers best <= ~0.42 (measured)


def populate(
    g: Gallery, cid: str, n_faces: int, *, dim: int = DIM, per: int = 3, seed: int = 0, model: str = "m1"
):
    centres, owners, vecs = synth_gallery(n_faces, dim, faces_per_identity=per, seed=seed)
    ids = []
    for i in range(len(centres)):
        ident = g.create_identity(cid, f"person-{i}", f"Person {i}")
        rows = np.where(owners == i)[0]
        g.enroll(cid, ident.id, faces_for(vecs[rows], model, start=int(rows[0])))
        ids.append(ident.id)
    return centres, owners, vecs, ids


@pytest.fixture
def populated(gallery: Gallery):
    gallery.create_collection("c", model="m1")
    return (gallery, *populate(gallery, "c", 240))


def test_enroll_identify_clustered(populated) -> None:
    g, centres, _owners, _vecs, ids = populated
    q, who = probes(centres, 60, impostor_fraction=0.25)
    res = identify_embeddings(g, "c", "m1", q, top_k=5, threshold=THRESHOLD)
    assert len(res) == 60
    genuine = [k for k in range(60) if who[k] >= 0]
    hits = sum(res[k].matches[0].identity_id == ids[who[k]] for k in genuine)
    assert hits >= 0.95 * len(genuine)
    for k in genuine:
        r = res[k]
        assert not r.unknown and r.best_score == r.matches[0].score >= THRESHOLD
        assert r.matches[0].above_threshold and r.matches[0].matched_faces >= 1
        assert r.matches[0].external_id.startswith("person-") and r.matches[0].name.startswith("Person ")
        scores = [m.score for m in r.matches]
        assert scores == sorted(scores, reverse=True) and len({m.identity_id for m in r.matches}) == len(
            scores
        )
    # strangers: unknown, though the closest identities are still listed
    for k in range(60):
        if who[k] < 0:
            assert res[k].unknown and res[k].matches and not res[k].matches[0].above_threshold
    # the score of a max-aggregated match is the cosine with that face's stored embedding
    m = res[genuine[0]].matches[0]
    stored = g.get_embeddings("c", m.identity_id, "m1")
    assert m.score == pytest.approx(
        float(np.max(stored @ (q[genuine[0]] / np.linalg.norm(q[genuine[0]])))), abs=1e-5
    )


def test_mean_aggregation_and_single_query(populated) -> None:
    g, centres, _owners, _vecs, _ids = populated
    q, _who = probes(centres, 10, seed=5)
    res = identify_embeddings(g, "c", "m1", q, top_k=3, aggregate="mean")
    for k, r in enumerate(res):
        best = r.matches[0]
        stored = g.get_embeddings("c", best.identity_id, "m1")
        qn = q[k] / np.linalg.norm(q[k])
        assert best.score == pytest.approx(float(np.mean(stored @ qn)), abs=1e-5)
        assert not r.unknown and r.threshold is None  # no threshold: known if anything matched
    one = identify_embeddings(g, "c", "m1", q[0], top_k=1)  # a (D,) vector is one query
    assert len(one) == 1 and len(one[0].matches) == 1
    with pytest.raises(InvalidRequest):
        identify_embeddings(g, "c", "m1", q, aggregate="median")  # type: ignore[arg-type]


def test_delete_identity_and_face_leave_identify(populated) -> None:
    g, _centres, owners, vecs, ids = populated
    target = 7
    q = vecs[owners == target][:1]
    assert identify_embeddings(g, "c", "m1", q, top_k=1)[0].matches[0].identity_id == ids[target]
    g.delete_identity("c", ids[target])
    res = identify_embeddings(g, "c", "m1", q, top_k=50)[0]
    assert ids[target] not in {m.identity_id for m in res.matches}
    face = g.list_faces("c", ids[8])[0]
    g.delete_face("c", face.id)
    assert face.id not in set(g.indexed_ids("c").tolist())
    assert all(
        m.face_id != face.id for m in identify_embeddings(g, "c", "m1", vecs[owners == 8][:1], top_k=50)[0].matches
    )


def test_restart_gives_identical_answers(populated, open_gallery: Callable[..., Gallery]) -> None:
    g, centres, _owners, _vecs, ids = populated
    g.delete_identity("c", ids[3])
    q, _ = probes(centres, 30, seed=9, impostor_fraction=0.2)
    before = identify_embeddings(g, "c", "m1", q, top_k=5, threshold=THRESHOLD)
    g.close()
    g2 = open_gallery()
    after = identify_embeddings(g2, "c", "m1", q, top_k=5, threshold=THRESHOLD)
    assert [[(m.identity_id, m.face_id) for m in r.matches] for r in after] == [
        [(m.identity_id, m.face_id) for m in r.matches] for r in before
    ]
    assert [m.score for r in after for m in r.matches] == pytest.approx(
        [m.score for r in before for m in r.matches], abs=1e-6
    )
    assert [r.unknown for r in after] == [r.unknown for r in before]


def test_model_and_dimension_mismatch_refused(gallery: Gallery) -> None:
    gallery.create_collection("c", model="m1")
    who = gallery.create_identity("c", "a")
    v = np.eye(2, DIM, dtype=np.float32)
    with pytest.raises(ModelMismatch):
        gallery.enroll("c", who.id, faces_for(v, "m2"))
    with pytest.raises(ModelMismatch):  # mixed models in one call
        gallery.enroll("c", who.id, faces_for(v[:1], "m1") + faces_for(v[1:], "m2"))
    assert gallery.get_identity("c", who.id).faces == 0  # nothing half-written
    gallery.enroll("c", who.id, faces_for(v, "m1"))
    with pytest.raises(ModelMismatch):
        gallery.enroll("c", who.id, faces_for(np.eye(1, 64, dtype=np.float32), "m1"))  # wrong dim
    with pytest.raises(ModelMismatch):
        identify_embeddings(gallery, "c", "m2", v)
    with pytest.raises(ModelMismatch):
        identify_embeddings(gallery, "c", "m1", np.eye(1, 64, dtype=np.float32))
    with pytest.raises(ModelMismatch):
        gallery.get_embeddings("c", who.id, "m2")
    with pytest.raises(InvalidRequest):
        gallery.enroll("c", who.id, faces_for(np.zeros((1, DIM), np.float32), "m1"))
    with pytest.raises(InvalidRequest):
        identify_embeddings(gallery, "c", "m1", np.full((1, DIM), np.nan, np.float32))
    assert gallery.get_identity("c", who.id).faces == 2


def test_exact_to_ivf_switch_and_recall(open_gallery: Callable[..., Gallery]) -> None:
    """Just above index_exact_max the gallery serves from IVF. With the default nprobe it
    finds >= 99 % of the neighbours that can decide an identification (cosine >= 0.4)
    and agrees with exact search on the top identity; with nprobe raised, strict
    recall@10 vs exact (all ten neighbours, near-tied strangers included) is >= 0.99."""
    g = open_gallery(index_exact_max=900)
    g.create_collection("big", model="m1")
    centres, owners, vecs, ids = populate(g, "big", 1000, dim=DIM, per=5, seed=3)
    assert g.wait_idle(60)  # crossing the threshold rebuilt the index in the background
    stats = g.index_stats("big")
    assert stats["kind"] == "ivf" and stats["ntotal"] == 1000
    assert np.array_equal(
        g.indexed_ids("big"), np.sort(np.array([f.id for i in ids for f in g.list_faces("big", i)]))
    )

    q, who = probes(centres, 200, seed=11, impostor_fraction=0.1)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    face_ids = g.indexed_ids("big")
    # face ids increase in enroll order: identity by identity
    order = np.concatenate([np.where(owners == i)[0] for i in range(len(ids))])
    exact = FaissIndex.build(face_ids, vecs[order], IndexParams(exact_max=10**9))
    assert exact.kind == "flat"
    want_d, want = exact.search(q, 10)

    def measure(gal: Gallery) -> tuple[float, float, float]:
        approx = gal.indexes.get("big", "m1")
        assert approx is not None and approx.kind == "ivf"
        _, got = approx.search(q, 10)
        strict = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, want)]))
        rel = (
            sum(len(set(a) & set(b[d >= 0.4])) for a, b, d in zip(got, want, want_d)) / (want_d >= 0.4).sum()
        )
        gen = who >= 0
        top1 = float(np.mean(got[gen, 0] == want[gen, 0]))
        return strict, float(rel), top1

    strict, rel, top1 = measure(g)
    assert rel >= 0.99 and top1 >= 0.99, (strict, rel, top1)
    strict_hi, _, _ = measure(open_gallery(index_exact_max=900, index_ivf_nprobe=20))
    assert strict_hi >= 0.99, strict_hi

    # identify answers agree with exact search on the top identity
    res = identify_embeddings(g, "big", "m1", q[:50], top_k=1)
    top_exact = [ids[owners[order[np.searchsorted(face_ids, w[0])]]] for w in want[:50]]
    assert np.mean([r.matches[0].identity_id == t for r, t in zip(res, top_exact)]) >= 0.98

    # a restart builds IVF directly; shrinking below 80% of the threshold goes back to flat
    g2 = open_gallery(index_exact_max=900)
    assert g2.index_stats("big")["kind"] == "ivf"
    for i in ids[:57]:  # 1000 -> 715 faces, below 0.8 * 900
        g2.delete_identity("big", i)
    assert g2.wait_idle(60)
    assert g2.index_stats("big")["kind"] == "flat" and g2.index_stats("big")["ntotal"] == 1000 - 285
    assert np.array_equal(
        g2.indexed_ids("big"), np.sort(np.array([f.id for i in ids[57:] for f in g2.list_faces("big", i)]))
    )


def test_flat_fp16_option_matches_exact(gallery: Gallery, open_gallery: Callable[..., Gallery]) -> None:
    gallery.create_collection("c", model="m1")
    centres, _, _, _ = populate(gallery, "c", 150)
    q, _ = probes(centres, 40, seed=21)
    exact = identify_embeddings(gallery, "c", "m1", q, top_k=3)
    fp16 = open_gallery(index_flat_fp16=True)
    assert fp16.index_stats("c")["kind"] == "flat"
    approx = identify_embeddings(fp16, "c", "m1", q, top_k=3)
    assert [r.matches[0].identity_id for r in approx] == [r.matches[0].identity_id for r in exact]
    assert [r.best_score for r in approx] == pytest.approx([r.best_score for r in exact], abs=2e-3)
    who = fp16.create_identity("c", "late")  # add/remove work on the fp16 index too
    [f] = fp16.enroll("c", who.id, faces_for(q[:1], "m1", start=900))
    assert identify_embeddings(fp16, "c", "m1", q[:1], top_k=1)[0].matches[0].face_id == f.id
    fp16.delete_face("c", f.id)
    assert f.id not in set(fp16.indexed_ids("c").tolist())
