"""The OpenAI request and response shapes this server speaks, with the same field names.

Requests are strict: an unknown field, a wrong type or an out-of-range value is a 400 that
names the field. A typo such as `max_token` would otherwise be silently ignored, and the
user would wonder why the answer is long. A few fields that SDKs and chat front-ends send
by default (`n`, `user`, the penalties at 0) are accepted, so those clients work unchanged.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer, model_validator

Role = Literal["system", "developer", "user", "assistant", "tool"]


class Strict(BaseModel):
    # strict: `"max_tokens": "10"` or `true` is a type error, as in the OpenAI API
    model_config = ConfigDict(extra="forbid", strict=True)


class TextPart(Strict):
    type: Literal["text"]
    text: str


class CalledFunction(Strict):
    name: str = Field(min_length=1)
    arguments: str  # JSON text, as OpenAI sends it


class ToolCall(Strict):
    id: str | None = None
    type: Literal["function"] = "function"
    function: CalledFunction


class ToolFunction(Strict):
    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict[str, Any] | None = None  # a JSON schema, passed to the template as is
    strict: bool | None = None


class Tool(Strict):
    type: Literal["function"]
    function: ToolFunction


class ChatMessage(Strict):
    role: Role
    content: str | list[TextPart] | None = None  # null on an assistant turn that only calls tools
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _content_or_calls(self) -> ChatMessage:
        if self.content is None and not self.tool_calls:
            raise ValueError("content is required (it may be null only on an assistant turn with tool_calls)")
        return self

    def text(self) -> str:
        """Content as one string; front-ends send either a string or a list of text parts."""
        if self.content is None:
            return ""
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)


class StreamOptions(Strict):
    include_usage: bool = False


class Sampling(Strict):
    """Fields shared by chat and text completions."""

    model: str = Field(min_length=1)
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    stop: (
        Annotated[str, Field(max_length=100)]
        | Annotated[list[Annotated[str, Field(max_length=100)]], Field(max_length=4)]
        | None
    ) = None
    seed: Annotated[int, Field(ge=-(2**63), lt=2**63)] | None = None  # int64, as OpenAI and torch.manual_seed take
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Literal[1] = 1  # one answer per request; several would multiply the queue time
    user: str | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0

    @field_validator("stop")
    @classmethod
    def _no_empty_stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        if value is not None and any(s == "" for s in ([value] if isinstance(value, str) else value)):
            raise ValueError("stop sequences must not be empty strings")
        return value

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _no_penalties(cls, value: float) -> float:
        # transformers has no additive presence/frequency penalty; refusing beats ignoring it silently
        if value != 0:
            raise ValueError("penalties are not supported by this server; leave the field out or send 0")
        return value

    def stops(self) -> list[str]:
        return [] if self.stop is None else [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def wants_usage_chunk(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    tools: list[Tool] | None = None
    tool_choice: Literal["auto", "none"] | None = None  # "required" and naming one tool are not supported
    parallel_tool_calls: bool | None = None

    def tool_list(self) -> list[dict[str, Any]] | None:
        """The tools to show the model: none when the client says tool_choice "none"."""
        if not self.tools or self.tool_choice == "none":
            return None
        return [tool.model_dump(exclude_none=True) for tool in self.tools]

    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None  # the newer name of max_tokens

    def requested_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class CompletionRequest(Sampling):
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)]

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    def requested_tokens(self) -> int | None:
        return self.max_tokens


# Responses: plain models; field names and `object` values follow the OpenAI API reference.


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[dict[str, Any]] | None = None

    @model_serializer
    def _calls_when_made(self) -> dict[str, Any]:
        # OpenAI sends tool_calls only when the model made some
        shown: dict[str, Any] = {"role": self.role, "content": self.content}
        return shown | ({"tool_calls": self.tool_calls} if self.tool_calls else {})


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str
    logprobs: None = None


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None

    @model_serializer
    def _only_set(self) -> dict[str, str]:
        # OpenAI sends {"content": "..."} or {} here, never "role": null
        return {k: v for k, v in (("role", self.role), ("content", self.content)) if v is not None}


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: str | None = None
    logprobs: None = None


class TextChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: str | None = None
    logprobs: None = None


class Envelope(BaseModel):
    """What every completion object and chunk carries: id, object, created, model."""

    id: str
    object: str
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    system_fingerprint: str = "tuneforge"


class ChatCompletion(Envelope):
    object: str = "chat.completion"
    choices: list[ChatChoice]
    usage: Usage


class ChatCompletionChunk(Envelope):
    object: str = "chat.completion.chunk"
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class TextCompletion(Envelope):
    object: str = "text_completion"
    choices: list[TextChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "tuneforge"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"
