"""Several worker processes behave as one service: rate limits and revocations are shared,
and /metrics counts every worker's requests whichever worker answers the scrape."""

from __future__ import annotations

import re
import time

import httpx

from devkit.server import Server
from tests.api.conftest import ADMIN, ADMIN_KEY

LIMIT = 20


def counted(metrics: str, route: str) -> float:
    return sum(float(m.group(1)) for m in re.finditer(
        rf'facegate_http_requests_total{{[^}}]*route="{re.escape(route)}"[^}}]*}} ([0-9.e+]+)', metrics))


def test_two_workers_share_limits_revocations_and_metrics(tmp_path, test_data) -> None:
    env = {"FACEGATE_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY, "FACEGATE_WORKERS": "2",
           "FACEGATE_RATE_LIMIT_PER_MINUTE": str(LIMIT), "FACEGATE_AUTH_FAILURES_PER_MINUTE": "0"}
    with Server(tmp_path / "data", env) as server, \
            httpx.Client(base_url=server.url, timeout=30) as c:
        key = c.post("/v1/keys", json={"name": "k", "scopes": ["read"]}, headers=ADMIN).json()
        hdr = {"X-API-Key": key["secret"]}
        # 40 requests over ~8 s, spread over both workers by new connections: per-process
        # buckets would admit ~2 x LIMIT; the shared one admits LIMIT plus the sync slack.
        if time.time() % 60 > 45:  # limits count per calendar minute: stay inside one
            time.sleep(61 - time.time() % 60)
        codes = []
        for _ in range(40):
            codes.append(httpx.get(server.url + "/v1/collections", headers=hdr, timeout=30).status_code)
            time.sleep(0.2)
        admitted = codes.count(200)
        assert set(codes) <= {200, 429}
        assert LIMIT <= admitted <= LIMIT + 6, codes

        # a revoke through one worker reaches the other within the key cache's second
        other = c.post("/v1/keys", json={"name": "r", "scopes": ["read"]}, headers=ADMIN).json()
        oh = {"X-API-Key": other["secret"]}
        for _ in range(4):
            assert httpx.get(server.url + "/v1/models", headers=oh, timeout=30).status_code == 200
        assert c.delete(f"/v1/keys/{other['id']}", headers=ADMIN).status_code == 204
        time.sleep(1.5)
        assert {httpx.get(server.url + "/v1/models", headers=oh, timeout=30).status_code for _ in range(8)} == {401}

        # /metrics sums the workers: every one of these requests is counted in every scrape
        before = counted(httpx.get(server.url + "/metrics", headers=ADMIN, timeout=30).text, "/v1/info")
        infos = [httpx.get(server.url + "/v1/info", timeout=30).status_code for _ in range(12)]
        assert infos == [200] * 12
        pages = [httpx.get(server.url + "/metrics", headers=ADMIN, timeout=30) for _ in range(4)]
        scrapes = [counted(p.text, "/v1/info") for p in pages]
        assert all(n == before + 12 for n in scrapes), (before, scrapes)
