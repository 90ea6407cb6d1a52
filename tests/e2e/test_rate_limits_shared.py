"""Rate limits across sidecars: 3 Envoys (2 workers each) and 2 control-plane replicas on one
PostgreSQL database. Each Envoy admits a subject's calls only within the share of its limit
the control plane leased it, so the Envoys together admit no more than the limit, and share
an idle Envoy does not use goes back to the others."""

from __future__ import annotations

import concurrent.futures
import json
import time

import pytest

from tests.harness.stack import Provider, Stack, fresh_postgres_database, request

CHAT = "/v1/chat/completions"
MODEL = "gpt-4o-mini"


def chat(url: str, key: str, max_tokens: int | None = None, headers: dict | None = None):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return request("POST", url + CHAT, body, {"authorization": f"Bearer {key}", **(headers or {})})


def spread(urls: list[str], calls: int, call):
    """`calls` calls at once, the i-th through Envoy i mod len(urls); their answers."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=calls) as pool:
        return list(pool.map(lambda i: call(urls[i % len(urls)]), range(calls)))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    s = Stack(workdir=tmp_path_factory.mktemp("shared-limits"),
              providers=[Provider("alpha", {MODEL: (0.15, 0.6, 0, 0)})],
              database_url=fresh_postgres_database("tg_e2e_shared_limits"), replicas=2, envoys=3)
    s.start()
    yield s
    s.stop()


def test_100_concurrent_calls_through_3_envoys_and_2_replicas_on_a_10_rpm_key_admit_exactly_10(cluster):
    assert cluster.envoy_concurrency == 2 and len(cluster.gateway_urls) == 3
    key = cluster.create_key("shared-rpm-10", rpm=10)
    answers = spread(cluster.gateway_urls, 100, lambda url: chat(url, key))
    statuses = [status for status, _, _ in answers]
    assert statuses.count(200) == 10, statuses
    assert statuses.count(429) == 90, statuses
    for status, headers, data in answers:
        assert headers["x-ratelimit-limit-requests"] == "10"
        if status == 429:
            error = json.loads(data)["error"]
            assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded"), error
            assert int(headers["retry-after"]) >= 1, headers
    # Every Envoy took part: the limit was not one Envoy's alone.
    by_envoy = [sum(1 for i, (s, _, _) in enumerate(answers) if s == 200 and i % 3 == e)
                for e in range(3)]
    assert sum(by_envoy) == 10, by_envoy

    # A minute later nothing more was admitted anywhere: every Envoy still refuses.
    for url in cluster.gateway_urls:
        status, _, data = chat(url, key)
        assert status == 429, data


def test_a_tpm_limit_across_3_envoys_never_admits_more_than_its_tokens(cluster):
    limit = 3000
    key = cluster.create_key("shared-tpm", tpm=limit)
    # One call tells what a call of this shape holds: the limit less what its answer says is left.
    status, headers, data = chat(cluster.gateway_urls[0], key, 100)
    assert status == 200, data
    hold = limit - int(headers["x-ratelimit-remaining-tokens"])
    assert 100 < hold < 200, hold
    cluster.usage(headers["x-tollgate-request-id"])
    used_first = json.loads(data)["usage"]["total_tokens"]

    # The provider answers each call after 2 s, so every admission is decided while every
    # admitted call still holds its whole hold.
    slow = {"x-offline-fault": "delay=2000"}
    answers = spread(cluster.gateway_urls, 60, lambda url: chat(url, key, 100, slow))
    admitted = [a for a in answers if a[0] == 200]
    assert {s for s, _, _ in answers} <= {200, 429}, [s for s, _, _ in answers]
    room = limit - used_first
    assert len(admitted) * hold <= room, (len(admitted), hold, room)
    # Share moves to where the calls are: no more than one hold's worth is lost per Envoy
    # to a share too small for a whole call.
    assert len(admitted) >= room // hold - 3, (len(admitted), room // hold)
    for status, headers, data in answers:
        assert headers["x-ratelimit-limit-tokens"] == str(limit)
        if status == 429:
            assert json.loads(data)["error"]["type"] == "tokens"


def test_share_an_idle_envoy_leaves_unused_goes_back_to_the_others(cluster):
    # 100 per minute leases a twentieth (5) at a time: one call on the first Envoy leaves it
    # holding 4 it does not use.
    key = cluster.create_key("shared-idle", rpm=100)
    first, *others = cluster.gateway_urls
    status, _, data = chat(first, key)
    assert status == 200, data

    # Once the first Envoy has been idle a while its idle pass gives the 4 back, and the
    # other Envoys can admit the whole rest of the limit between them.
    def rest_admitted():
        answers = spread(others, 120, lambda url: chat(url, key))
        return sum(1 for s, _, _ in answers if s == 200)

    time.sleep(12)
    admitted = rest_admitted()
    assert admitted == 99, admitted
    status, _, _ = chat(first, key)
    assert status == 429, "the minute's 100 are spent everywhere"
