"""Build the OpenAI response objects, whole or as stream chunks, for chat and text completions."""

from __future__ import annotations

from tuneforge.serving.engine import Result
from tuneforge.serving.schemas import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    Delta,
    TextChoice,
    TextCompletion,
    Usage,
    new_id,
)
from tuneforge.serving.tool_calls import split_tool_calls


def usage_of(result: Result) -> Usage:
    return Usage(
        prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
        total_tokens=result.prompt_tokens + result.completion_tokens,
    )  # fmt: skip


class ChatShape:
    """`chat.completion` and `chat.completion.chunk`; one id for every chunk of a stream."""

    def __init__(self, model: str, tools: bool = False) -> None:
        self.id, self.model, self.tools = new_id("chatcmpl"), model, tools

    def whole(self, result: Result) -> ChatCompletion:
        content, calls = split_tool_calls(result.text) if self.tools else (result.text, [])
        message = AssistantMessage(content=content, tool_calls=calls or None)
        choice = ChatChoice(message=message, finish_reason="tool_calls" if calls else result.finish_reason)
        return ChatCompletion(id=self.id, model=self.model, choices=[choice], usage=usage_of(result))

    def _chunk(self, delta: Delta, finish: str | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=self.id, model=self.model, choices=[ChatChunkChoice(delta=delta, finish_reason=finish)]
        )

    def opening(self) -> ChatCompletionChunk:
        return self._chunk(Delta(role="assistant", content=""))

    def piece(self, text: str) -> ChatCompletionChunk:
        return self._chunk(Delta(content=text))

    def finish(self, reason: str) -> ChatCompletionChunk:
        return self._chunk(Delta(), reason)

    def usage(self, result: Result) -> ChatCompletionChunk:
        return ChatCompletionChunk(id=self.id, model=self.model, choices=[], usage=usage_of(result))


class TextShape:
    """`text_completion`, whole or chunked (the same object name in both, as OpenAI does)."""

    def __init__(self, model: str) -> None:
        self.id, self.model = new_id("cmpl"), model

    def whole(self, result: Result) -> TextCompletion:
        choice = TextChoice(text=result.text, finish_reason=result.finish_reason)
        return TextCompletion(id=self.id, model=self.model, choices=[choice], usage=usage_of(result))

    def opening(self) -> None:
        return None

    def piece(self, text: str) -> TextCompletion:
        return TextCompletion(id=self.id, model=self.model, choices=[TextChoice(text=text)])

    def finish(self, reason: str) -> TextCompletion:
        return TextCompletion(id=self.id, model=self.model, choices=[TextChoice(text="", finish_reason=reason)])

    def usage(self, result: Result) -> TextCompletion:
        return TextCompletion(id=self.id, model=self.model, choices=[], usage=usage_of(result))
