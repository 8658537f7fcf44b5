"""Fault injection in the suite (the long version is ``python bench/faults.py``):
SIGKILL during concurrent enrolls for 2 rounds, read-only and full storage while
serving, broken model files at start, and a CUDA provider that is not there."""

from __future__ import annotations

import pytest

from devkit import faults


def test_sigkill_rounds_lose_nothing_and_leave_no_orphans(tmp_path, faces_dir) -> None:
    res = faults.sigkill_rounds(tmp_path / "kill", faces_dir, rounds=2, clients=3, seed=1, log=lambda *_: None)
    print(f"\nSIGKILL: {res['rounds']} rounds, {res['attempts']} attempts, {res['acknowledged']} acknowledged, "
          f"lost {res['lost']}, orphans {res['orphans']}")
    assert res["acknowledged"] >= 6
    assert res["lost"] == 0, res["per_round"]
    assert res["orphans"] == 0, res["per_round"]
    assert res["integrity_failures"] == 0, res["per_round"]
    assert all(r["integrity"] == "ok" for r in res["per_round"])
    # a dying server may fail requests with 5xx or drop them, never answer them with a 4xx
    assert all(r["client_errors"] == 0 for r in res["per_round"]), [r["unexpected_statuses"] for r in res["per_round"]]
    # after each restart the enrolled person is identified again (the index was rebuilt from the rows)
    assert all(r["identify_after_restart"] for r in res["per_round"])


def test_readonly_and_full_storage_give_typed_503_and_recover(tmp_path, faces_dir) -> None:
    res = faults.storage_faults(tmp_path, faces_dir)
    for fault, v in res.items():
        for op, status in v["statuses"].items():
            assert status == [503, "storage_unavailable"], (fault, op, status)
        assert v["reads_ok"], fault
        assert v["unchanged"], fault
        assert v["recovered"] and v["identify_after_recovery"], fault


def test_broken_model_files_fail_the_start_naming_the_file(tmp_path, shared_models) -> None:
    res = faults.model_faults(tmp_path, shared_models / "face_recognition_sface_2021dec_int8bq_clean.onnx")
    assert set(res) >= {"missing", "checksum", "unparsable", "truncated", "bad_card", "cli_missing"}
    for kind, v in res.items():
        if kind == "cli_missing":
            assert v["exit_code"] != 0 and v["names_file"], v
        else:
            assert v["start_failed"] and v["names_file"], (kind, v)


def test_missing_cuda_provider_falls_back_to_cpu_with_a_warning(tmp_path) -> None:
    res = faults.provider_fallback(tmp_path)
    assert res["ready"] == 200
    if res["cuda_available"]:
        pytest.skip("CUDA is available here: nothing to fall back from")
    assert set(res["providers"].values()) == {"CPUExecutionProvider"}
    assert res["warnings"] and "CUDAExecutionProvider" in res["warnings"][0]
