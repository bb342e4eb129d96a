"""usage_of: a provider's response read exactly, every input token counted, cache and reasoning
as parts of the totals. The responses are the providers' own SDK types (no network)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import genai_prices
import pytest
from anthropic.types import Message
from google.genai.types import GenerateContentResponse
from openai.types.chat import ChatCompletion
from openai.types.responses import Response
from pydantic import BaseModel

from conductloop_jupyter.core.errors import UsageError
from conductloop_jupyter.core.pricing import price_usd
from conductloop_jupyter.core.provider_usage import ProviderUsage, usage_of

Form = Callable[[BaseModel], object]
FORMS: dict[str, Form] = {
    "object": lambda response: response,
    "dict": lambda response: response.model_dump(mode="json"),
}
# Google's REST API (and the SDK's by_alias dump) spell the fields in camelCase.
GOOGLE_FORMS: dict[str, Form] = {
    **FORMS,
    "camelCase dict": lambda response: response.model_dump(
        mode="json", by_alias=True, exclude_none=True
    ),
}


def chat_completion(usage: dict[str, Any] | None, model: str = "gpt-4o-2024-08-06") -> BaseModel:
    return ChatCompletion.model_validate(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1_767_225_600,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "hello"},
                }
            ],
            "usage": usage,
        }
    )


def responses_response(usage: dict[str, Any] | None, model: str = "o3-mini") -> BaseModel:
    return Response.model_validate(
        {
            "id": "resp_1",
            "object": "response",
            "created_at": 1_767_225_600,
            "model": model,
            "output": [],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "usage": usage,
        }
    )


def anthropic_message(usage: dict[str, Any], model: str = "claude-sonnet-4-5") -> BaseModel:
    return Message.model_validate(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": "hello"}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": usage,
        }
    )


def google_response(usage: dict[str, Any] | None, model: str = "gemini-2.5-flash") -> BaseModel:
    return GenerateContentResponse.model_validate(
        {
            "model_version": model,
            "candidates": [{"content": {"role": "model", "parts": [{"text": "hello"}]}}],
            "usage_metadata": usage,
        }
    )


CHAT_USAGE = {
    "prompt_tokens": 2_000,
    "completion_tokens": 900,
    "total_tokens": 2_900,
    "prompt_tokens_details": {"cached_tokens": 1_536, "cache_write_tokens": 128},
    "completion_tokens_details": {"reasoning_tokens": 640},
}
RESPONSES_USAGE = {
    "input_tokens": 2_000,
    "input_tokens_details": {"cached_tokens": 1_024, "cache_write_tokens": 256},
    "output_tokens": 700,
    "output_tokens_details": {"reasoning_tokens": 512},
    "total_tokens": 2_700,
}
ANTHROPIC_USAGE = {
    "input_tokens": 50,
    "cache_read_input_tokens": 3_000,
    "cache_creation_input_tokens": 1_000,
    "cache_creation": {"ephemeral_5m_input_tokens": 1_000, "ephemeral_1h_input_tokens": 0},
    "output_tokens": 200,
    "output_tokens_details": {"thinking_tokens": 120},
}
GOOGLE_USAGE = {
    "prompt_token_count": 4_000,
    "cached_content_token_count": 2_048,
    "tool_use_prompt_token_count": 100,
    "candidates_token_count": 300,
    "thoughts_token_count": 700,
    "total_token_count": 5_100,
}


@pytest.mark.parametrize("form", FORMS.values(), ids=FORMS)
def test_openai_chat_completion_prompt_tokens_are_all_input_with_cache_and_reasoning_parts(
    form: Form,
) -> None:
    assert usage_of(form(chat_completion(CHAT_USAGE, model="o3-mini"))) == ProviderUsage(
        model="o3-mini",
        provider="openai",
        input_tokens=2_000,
        output_tokens=900,
        cache_read_tokens=1_536,
        cache_write_tokens=128,
        reasoning_tokens=640,
    )


@pytest.mark.parametrize("form", FORMS.values(), ids=FORMS)
def test_openai_chat_completion_without_details_has_no_cache_or_reasoning_tokens(
    form: Form,
) -> None:
    usage = {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
    assert usage_of(form(chat_completion(usage))) == ProviderUsage(
        "gpt-4o-2024-08-06", "openai", 12, 3
    )


@pytest.mark.parametrize("form", FORMS.values(), ids=FORMS)
def test_openai_response_input_tokens_are_all_input_with_cache_and_reasoning_parts(
    form: Form,
) -> None:
    assert usage_of(form(responses_response(RESPONSES_USAGE))) == ProviderUsage(
        model="o3-mini",
        provider="openai",
        input_tokens=2_000,
        output_tokens=700,
        cache_read_tokens=1_024,
        cache_write_tokens=256,
        reasoning_tokens=512,
    )


@pytest.mark.parametrize("form", FORMS.values(), ids=FORMS)
def test_anthropic_message_input_adds_its_cache_reads_and_writes_to_its_input_tokens(
    form: Form,
) -> None:
    assert usage_of(form(anthropic_message(ANTHROPIC_USAGE))) == ProviderUsage(
        model="claude-sonnet-4-5",
        provider="anthropic",
        input_tokens=50 + 3_000 + 1_000,
        output_tokens=200,
        cache_read_tokens=3_000,
        cache_write_tokens=1_000,
        reasoning_tokens=120,
    )


@pytest.mark.parametrize("form", FORMS.values(), ids=FORMS)
def test_anthropic_message_without_cache_fields_counts_only_its_input_tokens(form: Form) -> None:
    message = anthropic_message({"input_tokens": 40, "output_tokens": 9})
    assert usage_of(form(message)) == ProviderUsage("claude-sonnet-4-5", "anthropic", 40, 9)


@pytest.mark.parametrize("form", GOOGLE_FORMS.values(), ids=GOOGLE_FORMS)
def test_google_response_counts_thoughts_as_output_and_tool_use_prompts_as_input(
    form: Form,
) -> None:
    assert usage_of(form(google_response(GOOGLE_USAGE))) == ProviderUsage(
        model="gemini-2.5-flash",
        provider="google",
        input_tokens=4_000 + 100,
        output_tokens=300 + 700,
        cache_read_tokens=2_048,
        reasoning_tokens=700,
    )


@pytest.mark.parametrize(
    ("response", "provider"),
    [
        (chat_completion(CHAT_USAGE), "openai"),
        (responses_response(RESPONSES_USAGE), "openai"),
        (anthropic_message(ANTHROPIC_USAGE), "anthropic"),
        (google_response(GOOGLE_USAGE), "google"),
    ],
    ids=["chat completion", "response", "message", "generate content"],
)
@pytest.mark.parametrize("form", FORMS.values(), ids=FORMS)
def test_the_shape_names_the_provider_as_genai_prices_knows_it(
    response: BaseModel, provider: str, form: Form
) -> None:
    assert usage_of(form(response)).provider == provider


def test_a_given_provider_replaces_the_one_the_shape_implies() -> None:
    on_vertex = usage_of(anthropic_message(ANTHROPIC_USAGE), provider="google")
    assert on_vertex.provider == "google"
    assert on_vertex.input_tokens == 4_050  # still read as an Anthropic message
    assert usage_of(chat_completion(CHAT_USAGE), provider="azure").provider == "azure"


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (chat_completion(None), r"chat completion without `usage`.*include_usage"),
        (responses_response(None), r"Responses API response without `usage`"),
        ({"type": "message", "model": "claude-sonnet-4-5"}, r"Anthropic message without `usage`"),
        (google_response(None), r"Google response without `usage_metadata`"),
    ],
    ids=["chat completion", "response", "message", "generate content"],
)
def test_a_response_without_usage_is_a_usage_error(response: object, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        usage_of(response)


@pytest.mark.parametrize(
    "response",
    [
        {"model": "gpt-4o", "usage": {"input_tokens": 1, "output_tokens": 1}},
        {},
        None,
        "gpt-4o: 12 tokens",
        42,
        object(),
    ],
    ids=["usage without a shape", "empty dict", "None", "text", "number", "object"],
)
def test_an_unknown_shape_is_a_usage_error_naming_the_shapes_expected(response: object) -> None:
    with pytest.raises(UsageError, match=r"expects an OpenAI ChatCompletion .* Anthropic Message"):
        usage_of(response)


@pytest.mark.parametrize("bad", [True, -1, 1.5, "12"], ids=["bool", "negative", "float", "text"])
@pytest.mark.parametrize(
    ("response", "path"),
    [
        (chat_completion(CHAT_USAGE), ("usage", "prompt_tokens")),
        (chat_completion(CHAT_USAGE), ("usage", "prompt_tokens_details", "cached_tokens")),
        (anthropic_message(ANTHROPIC_USAGE), ("usage", "cache_read_input_tokens")),
        (google_response(GOOGLE_USAGE), ("usage_metadata", "thoughts_token_count")),
    ],
    ids=["chat input", "chat cached", "anthropic cache read", "google thoughts"],
)
def test_a_count_that_is_not_a_non_negative_integer_is_a_usage_error_naming_it(
    response: BaseModel, path: tuple[str, ...], bad: object
) -> None:
    data = response.model_dump(mode="json")
    *parents, last = path
    inner = data
    for name in parents:
        inner = inner[name]
    inner[last] = bad
    with pytest.raises(UsageError, match=rf"`{'.'.join(path)}` must be a non-negative integer"):
        usage_of(data)


def test_a_missing_required_count_is_a_usage_error_naming_it() -> None:
    data = chat_completion(CHAT_USAGE).model_dump(mode="json")
    del data["usage"]["completion_tokens"]
    with pytest.raises(UsageError, match=r"`usage.completion_tokens` is missing"):
        usage_of(data)


@pytest.mark.parametrize("provider", ["", 7])
def test_a_provider_that_is_not_a_name_is_a_usage_error(provider: Any) -> None:
    with pytest.raises(UsageError, match="provider must be a non-empty string"):
        usage_of(chat_completion(CHAT_USAGE), provider=provider)


def test_provider_usage_refuses_cache_tokens_beyond_its_input_tokens() -> None:
    with pytest.raises(UsageError, match=r"part of input_tokens \(100\)"):
        ProviderUsage("gpt-4o", "openai", 100, 5, cache_read_tokens=80, cache_write_tokens=30)


def test_provider_usage_refuses_reasoning_tokens_beyond_its_output_tokens() -> None:
    with pytest.raises(UsageError, match=r"part of output_tokens \(5\)"):
        ProviderUsage("o3-mini", "openai", 100, 5, reasoning_tokens=6)


@pytest.mark.parametrize("bad", [True, -3, 2.0])
def test_provider_usage_refuses_a_count_that_is_not_a_non_negative_integer(bad: Any) -> None:
    with pytest.raises(UsageError, match="`output_tokens` must be a non-negative integer"):
        ProviderUsage("gpt-4o", "openai", 10, bad)


@pytest.mark.parametrize(
    ("response", "flavor"),
    [
        (chat_completion(CHAT_USAGE), "chat"),
        (responses_response(RESPONSES_USAGE), "responses"),
        (anthropic_message(ANTHROPIC_USAGE), "default"),
        (google_response(GOOGLE_USAGE), "default"),
    ],
    ids=["chat completion", "response", "message", "generate content"],
)
def test_the_tokens_read_are_priced_as_genai_prices_own_extraction_prices_the_response(
    response: BaseModel, flavor: str
) -> None:
    usage = usage_of(response)
    wire = response.model_dump(mode="json", by_alias=True, exclude_none=True)
    theirs = genai_prices.extract_usage(wire, provider_id=usage.provider, api_flavor=flavor)
    assert usage.model is not None
    ours = price_usd(
        usage.model,
        usage.input_tokens,
        usage.output_tokens,
        usage.provider,
        cache_read_tokens=usage.cache_read_tokens,
        cache_write_tokens=usage.cache_write_tokens,
    )
    assert ours is not None
    assert ours == float(theirs.calc_price().total_price)
    assert (usage.input_tokens, usage.output_tokens) == (
        theirs.usage.input_tokens,
        theirs.usage.output_tokens,
    )
