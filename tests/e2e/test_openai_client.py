"""The official `openai` Python package against the gateway: the API surface works as
OpenAI's does, for OpenAI-format providers and for Anthropic behind translation."""

from __future__ import annotations

import json

import openai
import pytest

from conftest import CLAUDE_UPSTREAM, provider_saw

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


@pytest.fixture(scope="module")
def client(stack, key):
    return openai.OpenAI(base_url=stack.gateway_url + "/v1", api_key=key, max_retries=0, timeout=30)


def request_id(raw) -> str:
    return raw.headers["x-tollgate-request-id"]


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-sonnet", "gemini-2.5-flash", "deepseek-chat"])
def test_chat(client, model):
    c = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi from the sdk"}])
    assert "hi from the sdk" in c.choices[0].message.content
    assert c.choices[0].finish_reason == "stop"
    assert c.model == model
    assert c.usage.prompt_tokens > 0 and c.usage.completion_tokens > 0


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-sonnet"])
def test_stream_without_include_usage_sees_no_usage_chunk(stack, client, model):
    raw = client.chat.completions.with_raw_response.create(
        model=model, stream=True, messages=[{"role": "user", "content": "stream me"}])
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "stream me" in text
    # Exactly what the provider would have sent this client: no usage anywhere.
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks), "the usage-only chunk the gateway asked for leaked"
    row = stack.usage(request_id(raw))
    assert row["output"] > 0 and not row["estimated"]
    if model == "gpt-4o-mini":
        # The gateway asked the provider for usage on the client's behalf.
        seen = provider_saw(stack, "alpha", request_id(raw))
        assert seen["body"]["stream_options"] == {"include_usage": True}


def test_deepseek_stream_keeps_its_own_usage_placement(stack, client):
    raw = client.chat.completions.with_raw_response.create(
        model="deepseek-chat", stream=True, messages=[{"role": "user", "content": "stream me"}])
    chunks = list(raw.parse())
    # DeepSeek reports usage on the finish chunk unasked; the gateway neither asks nor strips.
    assert chunks[-1].choices[0].finish_reason == "stop" and chunks[-1].usage.total_tokens > 0
    assert "stream_options" not in provider_saw(stack, "deepseek", request_id(raw))["body"]


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-sonnet"])
def test_stream_with_include_usage_gets_it(client, model):
    chunks = list(client.chat.completions.create(
        model=model, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "count me"}]))
    assert chunks[-1].choices == []
    assert chunks[-1].usage.prompt_tokens > 0 and chunks[-1].usage.completion_tokens > 0


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-sonnet"])
def test_tools(client, model):
    c = client.chat.completions.create(model=model, tools=[WEATHER_TOOL],
                                       messages=[{"role": "user", "content": "weather in Oslo"}])
    call = c.choices[0].message.tool_calls[0]
    assert c.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["echo"] == "weather in Oslo"
    # The tool result goes back and the model answers in text.
    follow = client.chat.completions.create(model=model, tools=[WEATHER_TOOL], messages=[
        {"role": "user", "content": "weather in Oslo"},
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"}])
    assert follow.choices[0].finish_reason == "stop"


def test_streamed_tool_call_through_anthropic(client):
    chunks = list(client.chat.completions.create(
        model="claude-sonnet", stream=True, tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": "weather in Bergen"}]))
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls[0].function.name == "get_weather"
    arguments = "".join(tc.function.arguments or "" for tc in calls)
    assert json.loads(arguments) == {"echo": "weather in Bergen"}
    assert any(c.choices and c.choices[0].finish_reason == "tool_calls" for c in chunks)


def test_n2(client):
    c = client.chat.completions.create(model="gpt-4o-mini", n=2, messages=[{"role": "user", "content": "two"}])
    assert [ch.index for ch in c.choices] == [0, 1]
    assert c.choices[0].message.content != c.choices[1].message.content


def test_n2_is_refused_for_anthropic(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="claude-sonnet", n=2, messages=[{"role": "user", "content": "x"}])
    assert e.value.body["param"] == "n"


def test_unknown_fields_and_response_format_pass_through(stack, client):
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}],
        response_format={"type": "json_object"}, extra_body={"some_future_field": {"nested": [1, 2]}})
    seen = provider_saw(stack, "alpha", request_id(raw))
    assert seen["body"]["some_future_field"] == {"nested": [1, 2]}
    assert seen["body"]["response_format"] == {"type": "json_object"}


def test_anthropic_gets_its_own_format_and_model_name(stack, client):
    raw = client.chat.completions.with_raw_response.create(
        model="claude-sonnet", max_tokens=50,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "x"}])
    seen = provider_saw(stack, "claude", request_id(raw))
    assert seen["path"] == "/v1/messages"
    assert seen["model"] == CLAUDE_UPSTREAM
    assert seen["anthropic_version"] == "2023-06-01"
    assert seen["authorization"] is None and seen["x_api_key"]
    assert seen["body"]["system"] == [{"type": "text", "text": "Be brief."}]
    assert seen["body"]["max_tokens"] == 50


def test_gemini_gets_its_openai_path(stack, client):
    raw = client.chat.completions.with_raw_response.create(
        model="gemini-2.5-flash", messages=[{"role": "user", "content": "x"}])
    assert provider_saw(stack, "gemini", request_id(raw))["path"] == "/v1beta/openai/chat/completions"


def test_embeddings(client):
    e = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"], dimensions=4)
    assert [d.index for d in e.data] == [0, 1]
    assert len(e.data[0].embedding) == 4
    assert e.usage.prompt_tokens > 0


def test_completions(client):
    c = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say this is a test")
    assert "Say this is a test" in c.choices[0].text


def test_models_list_and_retrieve(stack, client):
    ids = {m.id for m in client.models.list()}
    assert {"gpt-4o-mini", "claude-sonnet", "gemini-2.5-flash", "deepseek-chat"} <= ids
    assert client.models.retrieve("claude-sonnet").owned_by == "claude"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")
    limited = openai.OpenAI(base_url=stack.gateway_url + "/v1", max_retries=0,
                            api_key=stack.create_key("models-limited", models=["gpt-4o-mini"]))
    assert [m.id for m in limited.models.list()] == ["gpt-4o-mini"]
    with pytest.raises(openai.NotFoundError):
        limited.models.retrieve("gpt-4o")


@pytest.mark.parametrize("stream", [False, True])
def test_responses(stack, client, stream):
    if stream:
        events = list(client.responses.create(model="gpt-4o-mini", input="respond please", stream=True))
        done = [e for e in events if e.type == "response.completed"][0]
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        usage = done.response.usage
    else:
        r = client.responses.create(model="gpt-4o-mini", input="respond please")
        text, usage = r.output_text, r.usage
    assert "respond please" in text
    assert usage.input_tokens > 0 and usage.output_tokens > 0


def test_responses_usage_is_stored(stack, client):
    raw = client.responses.with_raw_response.create(model="gpt-4o-mini", input="store me", stream=False)
    usage = raw.parse().usage
    row = stack.usage(request_id(raw))
    assert (row["input_uncached"], row["output"]) == (usage.input_tokens, usage.output_tokens)


def test_error_classes(stack, client):
    bad_key = openai.OpenAI(base_url=stack.gateway_url + "/v1", api_key="tg-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad_key.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "robot", "content": "x"}])
    assert e.value.body["param"] == "messages[0].role"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    limited = openai.OpenAI(base_url=stack.gateway_url + "/v1", max_retries=0,
                            api_key=stack.create_key("errors-limited", models=["gpt-4o-mini"]))
    with pytest.raises(openai.PermissionDeniedError):
        limited.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}],
                                       extra_headers={"x-offline-fault": "status=500"})
    assert isinstance(e.value, openai.APIStatusError) and e.value.status_code == 500
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}],
                                       extra_headers={"x-offline-fault": "status=429"})


def test_a_spent_rate_limit_raises_the_sdks_rate_limit_error(stack):
    limited = openai.OpenAI(base_url=stack.gateway_url + "/v1", api_key=stack.create_key("sdk-rpm", rpm=1),
                            max_retries=0, timeout=30)
    messages = [{"role": "user", "content": "once a minute"}]
    limited.chat.completions.create(model="gpt-4o-mini", messages=messages)
    with pytest.raises(openai.RateLimitError) as refused:
        limited.chat.completions.create(model="gpt-4o-mini", messages=messages)
    assert refused.value.status_code == 429
    assert refused.value.code == "rate_limit_exceeded"
    assert 1 <= int(refused.value.response.headers["retry-after"]) <= 61
