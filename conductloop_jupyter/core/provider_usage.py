"""One LLM call's model and token counts, read off the provider's response.

Whatever the provider reports, the counts follow genai-prices' (and OpenTelemetry's)
convention: ``input_tokens`` is every input token, cached ones included, and the cache
reads and writes are parts of it; ``output_tokens`` is every output token, reasoning
included, and ``reasoning_tokens`` is part of it. Per shape (and the provider id it
implies):

- OpenAI ``ChatCompletion`` (``"openai"``): input ``prompt_tokens``; cache read / write
  ``prompt_tokens_details.cached_tokens`` / ``.cache_write_tokens``; output
  ``completion_tokens``; reasoning ``completion_tokens_details.reasoning_tokens``.
- OpenAI Responses API ``Response`` (``"openai"``): input ``input_tokens``; cache read /
  write ``input_tokens_details.cached_tokens`` / ``.cache_write_tokens``; output
  ``output_tokens``; reasoning ``output_tokens_details.reasoning_tokens``.
- Anthropic ``Message`` (``"anthropic"``): its ``input_tokens`` leaves the cache out, so
  input is ``input_tokens + cache_read_input_tokens + cache_creation_input_tokens``; cache
  read / write those two; output ``output_tokens``; reasoning
  ``output_tokens_details.thinking_tokens``.
- Google ``GenerateContentResponse`` (``"google"``): input ``prompt_token_count`` (cache
  included) ``+ tool_use_prompt_token_count``; cache read ``cached_content_token_count``;
  output ``candidates_token_count + thoughts_token_count`` (thoughts are billed as
  output); reasoning ``thoughts_token_count``.

These are the sums genai-prices' own extractors make. They are not called here: its
``extract_usage`` raises for a model it cannot price (whose tokens still need recording),
accepts fractional counts, and reads Google's response only in its REST camelCase. No
provider SDK is imported: objects are read by attribute, dicts by key (a Google dict in
snake_case or camelCase).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields

from .errors import UsageError

_EXPECTED = (
    "an OpenAI ChatCompletion or Responses API Response, an Anthropic Message or a Google "
    "GenerateContentResponse (the SDK's object or its dict form)"
)
_STREAM_HINT = "; when streaming, ask for it with stream_options={'include_usage': True}"


@dataclass(frozen=True)
class ProviderUsage:
    """One call's model and tokens; ``provider`` is genai-prices' id (``"openai"``, ...).

    >>> ProviderUsage("gpt-4o", "openai", input_tokens=1200, output_tokens=80,
    ...               cache_read_tokens=1024)
    """

    model: str | None
    provider: str | None
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    def __post_init__(self) -> None:
        for name in ("model", "provider"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise UsageError(f"{name} must be a non-empty string or None, not {value!r}")
        for field in fields(self)[2:]:
            _count(getattr(self, field.name), field.name)
        if self.cache_read_tokens + self.cache_write_tokens > self.input_tokens:
            raise UsageError(
                f"cache tokens ({self.cache_read_tokens} read, {self.cache_write_tokens} "
                f"written) are part of input_tokens ({self.input_tokens}) and cannot exceed it"
            )
        if self.reasoning_tokens > self.output_tokens:
            raise UsageError(
                f"reasoning_tokens ({self.reasoning_tokens}) are part of output_tokens "
                f"({self.output_tokens}) and cannot exceed them"
            )


def usage_of(response: object, provider: str | None = None) -> ProviderUsage:
    """The model and tokens a provider's response reports, cache and reasoning included.

    ``provider`` overrides the one the shape implies: an Anthropic model on Vertex AI is
    ``"google"``'s, an OpenAI-compatible server's is its own.

    >>> usage_of(client.messages.create(...))          # an anthropic.types.Message
    ProviderUsage(model='claude-sonnet-4-5', provider='anthropic', ...)
    """
    if provider is not None and (not isinstance(provider, str) or not provider):
        raise UsageError(f"provider must be a non-empty string or None, not {provider!r}")
    shape = _shape_of(response)
    if shape is None:
        raise UsageError(f"usage_of expects {_EXPECTED}, not {_describe(response)}")
    implied, read = shape
    return read(response, provider or implied)


_Reader = Callable[[object, str], ProviderUsage]


def _shape_of(response: object) -> tuple[str, _Reader] | None:
    if _get(response, "type") == "message":
        return "anthropic", _anthropic
    kind = _get(response, "object")
    if kind == "response":
        return "openai", _openai_responses
    if kind in ("chat.completion", "chat.completion.chunk"):
        return "openai", _openai_chat
    if any(_has(response, key) for key in ("candidates", "usage_metadata", "usageMetadata")):
        return "google", _google
    return None


def _openai_chat(response: object, provider: str) -> ProviderUsage:
    _need(response, "usage", "an OpenAI chat completion", _STREAM_HINT)
    return ProviderUsage(
        model=_model(response, "model"),
        provider=provider,
        input_tokens=_required(response, "usage.prompt_tokens"),
        output_tokens=_required(response, "usage.completion_tokens"),
        cache_read_tokens=_optional(response, "usage.prompt_tokens_details.cached_tokens"),
        cache_write_tokens=_optional(response, "usage.prompt_tokens_details.cache_write_tokens"),
        reasoning_tokens=_optional(response, "usage.completion_tokens_details.reasoning_tokens"),
    )


def _openai_responses(response: object, provider: str) -> ProviderUsage:
    _need(response, "usage", "an OpenAI Responses API response")
    return ProviderUsage(
        model=_model(response, "model"),
        provider=provider,
        input_tokens=_required(response, "usage.input_tokens"),
        output_tokens=_required(response, "usage.output_tokens"),
        cache_read_tokens=_optional(response, "usage.input_tokens_details.cached_tokens"),
        cache_write_tokens=_optional(response, "usage.input_tokens_details.cache_write_tokens"),
        reasoning_tokens=_optional(response, "usage.output_tokens_details.reasoning_tokens"),
    )


def _anthropic(response: object, provider: str) -> ProviderUsage:
    _need(response, "usage", "an Anthropic message")
    cache_read = _optional(response, "usage.cache_read_input_tokens")
    cache_write = _optional(response, "usage.cache_creation_input_tokens")
    return ProviderUsage(
        model=_model(response, "model"),
        provider=provider,
        input_tokens=_required(response, "usage.input_tokens") + cache_read + cache_write,
        output_tokens=_required(response, "usage.output_tokens"),
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        reasoning_tokens=_optional(response, "usage.output_tokens_details.thinking_tokens"),
    )


def _google(response: object, provider: str) -> ProviderUsage:
    _need(response, "usage_metadata", "a Google response", camel=True)

    def tokens(name: str) -> int:
        return _optional(response, f"usage_metadata.{name}", camel=True)

    thoughts = tokens("thoughts_token_count")
    return ProviderUsage(
        model=_model(response, "model_version", camel=True),
        provider=provider,
        input_tokens=tokens("prompt_token_count") + tokens("tool_use_prompt_token_count"),
        output_tokens=tokens("candidates_token_count") + thoughts,
        cache_read_tokens=tokens("cached_content_token_count"),
        reasoning_tokens=thoughts,
    )


def _get(obj: object, name: str) -> object:
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


def _has(obj: object, name: str) -> bool:
    return name in obj if isinstance(obj, Mapping) else hasattr(obj, name)


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(word.title() for word in rest)


def _at(obj: object, path: str, *, camel: bool = False) -> object:
    """The value at a dotted path, or None where a step is missing or None."""
    for name in path.split("."):
        value = _get(obj, name)
        if value is None and camel:
            value = _get(obj, _camel(name))
        if value is None:
            return None
        obj = value
    return obj


def _need(response: object, path: str, what: str, hint: str = "", camel: bool = False) -> None:
    if _at(response, path, camel=camel) is None:
        raise UsageError(f"{what} without `{path}`: there are no token counts to record{hint}")


def _required(response: object, path: str) -> int:
    value = _at(response, path)
    if value is None:
        raise UsageError(f"`{path}` is missing: expected the token count the provider reports")
    return _count(value, path)


def _optional(response: object, path: str, *, camel: bool = False) -> int:
    value = _at(response, path, camel=camel)
    return 0 if value is None else _count(value, path)


def _count(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UsageError(f"`{where}` must be a non-negative integer, not {value!r}")
    return value


def _model(response: object, path: str, *, camel: bool = False) -> str | None:
    model = _at(response, path, camel=camel)
    if model is not None and not isinstance(model, str):
        raise UsageError(f"`{path}` must be the model's name, not {model!r}")
    return model


def _describe(response: object) -> str:
    if isinstance(response, Mapping):
        return f"a dict with keys {sorted(map(str, response))[:8]}"
    return f"a {type(response).__qualname__}"
