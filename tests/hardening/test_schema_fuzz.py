"""Schema fuzzing: schemathesis generates requests for every operation of the app's own
OpenAPI document (valid API key attached), positive and negative data, and checks that
no response is a server error and every response matches what the document declares
(status code, content type, body schema).

The number of examples per operation is bounded (``FACEGATE_FUZZ_EXAMPLES``, default 20)
so the suite stays fast on 2 cores; raise it for a deeper run.
"""

from __future__ import annotations

import os
from collections import Counter

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import checks as st_checks
from schemathesis.specs.openapi import checks as oa_checks

from tests.api.conftest import ADMIN, make_settings
from tests.hardening.conftest import MAX_IMAGE, MAX_REQUEST

EXAMPLES = int(os.environ.get("FACEGATE_FUZZ_EXAMPLES", "20"))
CHECKS = [
    st_checks.not_a_server_error,
    oa_checks.status_code_conformance,
    oa_checks.content_type_conformance,
    oa_checks.response_schema_conformance,
]


@pytest.fixture(scope="module")
def fuzz_schema(tmp_path_factory, test_data):
    from service.api.app import create_app

    tmp = tmp_path_factory.mktemp("fuzz")
    app = create_app(make_settings(tmp, max_request_bytes=MAX_REQUEST, max_image_bytes=MAX_IMAGE))
    # schemathesis runs the app's lifespan itself (models load, the database migrates) once.
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    return schema, app


def test_schemathesis_all_operations(fuzz_schema, capsys) -> None:
    schema, _app = fuzz_schema
    stats: Counter = Counter()
    failures: list[str] = []
    operations = []
    for result in schema.get_all_operations():
        op = result.ok()
        operations.append(op)

    for op in operations:
        strategy = op.as_strategy()

        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def run(case) -> None:
            case.headers = {**(case.headers or {}), **ADMIN}
            response = case.call()
            stats["requests"] += 1
            stats[f"status_{response.status_code // 100}xx"] += 1
            stats[f"code_{response.status_code}"] += 1
            try:
                case.validate_response(response, checks=CHECKS)
            except Exception as e:
                failures.append(f"{op.method.upper()} {op.path}: {str(e)[:1500]}")  # noqa: B023 - run() is called in this iteration
                raise

        try:
            run()
        except Exception:  # noqa: BLE001, S110 - already recorded in failures
            pass
        stats["operations"] += 1

    codes = {k: v for k, v in stats.items() if k.startswith("code_")}
    with capsys.disabled():
        print(f"\nschemathesis: {stats['operations']} operations, {stats['requests']} requests "
              f"(max {EXAMPLES} examples each), statuses {codes}, "
              f"failures: {len(failures)}")
    assert stats["operations"] >= 20
    assert not failures, "\n\n".join(failures)
    assert stats["status_5xx"] == 0
