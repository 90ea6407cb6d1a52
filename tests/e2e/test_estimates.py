"""Calls the gateway must count itself: big prompts whose provider reports no usage, streams
cut by the client or the provider. The offline provider counts honestly with tiktoken, so
the same call with usage reported gives the true count to compare with."""

from __future__ import annotations

import http.client
import json
import random

from conftest import CLAUDE_UPSTREAM
from tests.harness.stack import read_stream, request

CHAT = "/v1/chat/completions"

# A sampled prompt's estimate stays within these bounds of the true count for natural text
# (README, "Estimates"): slices are unbiased, and the allowance for their cut ends adds ~1%.
LOW, HIGH = 0.95, 1.10

WORDS = ("the of and to in is was for on that with as by at from his her they be this have "
         "not are but had which one were all their there been has when who will more no if "
         "out so said what up its about into than them can only other new some could time "
         "these two may then do first any my now such like our over man me even most made "
         "after also did many before must through back years where much your way well down "
         "should because each just those people Mr how too little state good very make world "
         "still own see men work long get here between both life being under never day same "
         "another know while last might us great old year off come since against go came "
         "right used take three Tollgate gateway Envoy provider tokens 2024 42 3.14 (see) "
         "JSON: {\"a\": 1}, well-known").split()


def prose(n_bytes: int, seed: int) -> str:
    """About `n_bytes` of sentence-like text, the same for the same seed."""
    rng = random.Random(seed)
    out, size = [], 0
    while size < n_bytes:
        sentence = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 25)))
        sentence = sentence[0].upper() + sentence[1:] + rng.choice([". ", "! ", "? ", ".\n"])
        out.append(sentence)
        size += len(sentence)
    return "".join(out)


def headers(key: str, fault: str | None = None) -> dict:
    h = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    if fault:
        h["x-offline-fault"] = fault
    return h


def honest_usage(stack, key, body: dict) -> dict:
    """The usage the offline provider reports for `body`, asked without streaming."""
    status, _, data = request("POST", stack.gateway_url + CHAT, {**body, "stream": False}, headers(key))
    assert status == 200, data[:300]
    return json.loads(data)


def stream(stack, key, body: dict, fault: str, stop_after: bytes | None = None):
    """Streams `body`; returns (request id, bytes received) when the stream ends or is cut,
    or once `stop_after` was received (the client then hangs up)."""
    conn = http.client.HTTPConnection(f"127.0.0.1:{stack.gateway_port}", timeout=30)
    conn.request("POST", CHAT, body=json.dumps({**body, "stream": True}), headers=headers(key, fault))
    resp = conn.getresponse()
    assert resp.status == 200
    request_id = resp.getheader("x-tollgate-request-id")
    received = read_stream(conn, resp, stop_after)
    return request_id, received


def content_of(sse: bytes) -> str:
    """The text of the OpenAI chunks in a (possibly cut) stream."""
    text = []
    for line in sse.decode(errors="replace").splitlines():
        if line.startswith("data: {"):
            try:
                chunk = json.loads(line[len("data: "):])
            except json.JSONDecodeError:
                continue  # the cut last line
            for choice in chunk.get("choices", []):
                text.append((choice.get("delta") or {}).get("content") or "")
    return "".join(text)


def test_no_usage_stream_with_a_300kb_prompt_is_estimated_near_the_true_count(stack, key):
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prose(300_000, 1)}]}
    honest = honest_usage(stack, key, body)["usage"]
    request_id, data = stream(stack, key, body, "no-usage")
    assert b"[DONE]" in data
    row = stack.usage(request_id)
    ratio = row["input_uncached"] / honest["prompt_tokens"]
    print(f"\n300 KB no-usage stream: recorded {row['input_uncached']} prompt tokens, "
          f"true {honest['prompt_tokens']} ({ratio:.3f}x); output {row['output']} vs {honest['completion_tokens']}")
    assert row["estimated"] and not row["partial"]
    assert LOW <= ratio <= HIGH
    # The answer is short enough to be kept whole, so it is counted exactly.
    assert row["output"] == honest["completion_tokens"]


def test_client_gone_after_the_first_chunk_of_a_70k_token_prompt_is_estimated(stack, key):
    # One text over 256 KiB: the gateway once dropped such a text whole and recorded 7 tokens.
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": prose(300_000, 3)}]}
    honest = honest_usage(stack, key, body)["usage"]
    assert 60_000 < honest["prompt_tokens"] < 80_000
    request_id, data = stream(stack, key, body, "slow=200", stop_after=b"data: ")
    assert b"[DONE]" not in data
    row = stack.usage(request_id, timeout=15)
    ratio = row["input_uncached"] / honest["prompt_tokens"]
    print(f"\n~70k-token prompt, client gone after the first chunk: recorded {row['input_uncached']}, "
          f"true {honest['prompt_tokens']} ({ratio:.3f}x)")
    assert row["estimated"] and row["partial"]
    assert LOW <= ratio <= HIGH


def anthropic_answer(stack, key, body: dict) -> tuple[str, int]:
    """The answer text and its true output tokens, from the same call unstreamed."""
    answer = honest_usage(stack, key, body)
    return answer["choices"][0]["message"]["content"], answer["usage"]["completion_tokens"]


def test_anthropic_stream_cut_after_text_deltas_bills_the_text_received(stack, key):
    body = {"model": "claude-sonnet", "max_tokens": 200,
            "messages": [{"role": "user", "content": "one two three four five six seven eight nine ten"}]}
    text, _ = anthropic_answer(stack, key, body)
    # message_start, content_block_start, ping, then 6 of the answer's word deltas.
    request_id, data = stream(stack, key, body, "reset-after=9")
    received = content_of(data)
    assert received and text.startswith(received) and received != text
    row = stack.usage(request_id)
    print(f"\nAnthropic stream cut after 6 deltas ({received!r}): recorded output {row['output']}")
    assert row["partial"] and row["estimated"]
    # Every word the client received is at least one token.
    assert row["output"] >= len(received.split())


def test_anthropic_stream_cut_before_message_delta_bills_all_of_its_text(stack, key):
    body = {"model": "claude-sonnet", "max_tokens": 200,
            "messages": [{"role": "user", "content": "tell me about the gateway"}]}
    text, true_output = anthropic_answer(stack, key, body)
    assert CLAUDE_UPSTREAM in text
    words = len(text.split(" "))
    # message_start, content_block_start, ping, every delta, content_block_stop: the cut
    # falls right before message_delta, the event with the real output count.
    request_id, data = stream(stack, key, body, f"reset-after={4 + words}")
    assert content_of(data) == text
    row = stack.usage(request_id)
    print(f"\nAnthropic stream cut before message_delta: recorded output {row['output']}, true {true_output}")
    assert row["partial"] and row["estimated"]
    assert row["output"] >= true_output
    assert row["input_uncached"] > 0, "the prompt count message_start reported is kept"
