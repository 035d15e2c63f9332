"""OpenAI-shaped response and request types, named as llama-cpp-python users know them, and two
helpers to fill their `id` and `created` fields.

These are TypedDicts: plain dicts at runtime, precise types for checkers. Keys that a response
may omit are declared in `total=False` subclasses."""
from __future__ import annotations

import time
import uuid
from typing import Any, Dict, List, Literal, Optional, TypedDict, Union

__all__ = [
    "FinishReason", "CompletionLogprobs", "CompletionChoice", "CompletionUsage", "Completion",
    "CompletionChunk", "ChatCompletionFunctionCall", "ChatCompletionMessageToolCall",
    "ChatCompletionMessage", "ChatCompletionChoice", "ChatCompletion", "ChatCompletionChunkDelta",
    "ChatCompletionChunkChoice", "ChatCompletionChunk", "ChatMessage", "EmbeddingUsage", "Embedding",
    "CreateEmbeddingResponse", "new_id", "now",
]

FinishReason = Literal["stop", "length"]


# -- text completions --------------------------------------------------------------------------

class CompletionLogprobs(TypedDict):
    """Per-token details of a completion's text (`logprobs=N`)."""

    text_offset: List[int]
    token_logprobs: List[Optional[float]]
    tokens: List[str]
    top_logprobs: List[Optional[Dict[str, float]]]


class CompletionChoice(TypedDict):
    text: str
    index: int
    logprobs: Optional[CompletionLogprobs]
    finish_reason: Optional[FinishReason]


class CompletionUsage(TypedDict):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionChunk(TypedDict):
    """One streamed piece of a text completion (no usage)."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: List[CompletionChoice]


class Completion(CompletionChunk):
    """create_completion()'s result."""

    usage: CompletionUsage


# -- embeddings --------------------------------------------------------------------------------

class EmbeddingUsage(TypedDict):
    prompt_tokens: int
    total_tokens: int


class Embedding(TypedDict):
    index: int
    object: str
    embedding: Union[List[float], List[List[float]]]  # one vector, or one per token (pooling NONE)


class CreateEmbeddingResponse(TypedDict):
    """create_embedding()'s result."""

    object: Literal["list"]
    model: str
    data: List[Embedding]
    usage: EmbeddingUsage


# -- chat completions --------------------------------------------------------------------------

class ChatCompletionFunctionCall(TypedDict):
    name: str
    arguments: str  # JSON text


class ChatCompletionMessageToolCall(TypedDict):
    id: str
    type: Literal["function"]
    function: ChatCompletionFunctionCall


class _ChatCompletionMessageRequired(TypedDict):
    role: Literal["assistant"]
    content: Optional[str]


class ChatCompletionMessage(_ChatCompletionMessageRequired, total=False):
    """The assistant's reply in a ChatCompletion."""

    reasoning_content: Optional[str]
    tool_calls: List[ChatCompletionMessageToolCall]


class ChatCompletionChoice(TypedDict):
    index: int
    message: ChatCompletionMessage
    logprobs: Optional[CompletionLogprobs]
    finish_reason: Optional[FinishReason]


class ChatCompletion(TypedDict):
    """create_chat_completion()'s result."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: List[ChatCompletionChoice]
    usage: CompletionUsage


class ChatCompletionChunkDelta(TypedDict, total=False):
    """What a streamed chunk adds: the role first, then content pieces, then nothing ({})."""

    role: Literal["assistant"]
    content: Optional[str]
    reasoning_content: Optional[str]
    tool_calls: List[ChatCompletionMessageToolCall]


class ChatCompletionChunkChoice(TypedDict):
    index: int
    delta: ChatCompletionChunkDelta
    logprobs: Optional[CompletionLogprobs]
    finish_reason: Optional[FinishReason]


class ChatCompletionChunk(TypedDict):
    """One streamed piece of a chat completion."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: List[ChatCompletionChunkChoice]


class _ChatMessageRequired(TypedDict):
    role: Literal["system", "user", "assistant", "tool"]
    content: Optional[Union[str, List[Dict[str, Any]]]]  # a str, or [{"type": "text", "text": ...}]


class ChatMessage(_ChatMessageRequired, total=False):
    """One input message of create_chat_completion(messages=[...])."""

    name: str
    reasoning_content: Optional[str]
    tool_calls: List[ChatCompletionMessageToolCall]
    tool_call_id: str


# llama-cpp-python's newer names for the same shapes.
CreateCompletionResponse = Completion
CreateCompletionStreamResponse = CompletionChunk
ChatCompletionResponseMessage = ChatCompletionMessage
ChatCompletionResponseChoice = ChatCompletionChoice
CreateChatCompletionResponse = ChatCompletion
ChatCompletionStreamResponseDelta = ChatCompletionChunkDelta
ChatCompletionStreamResponseChoice = ChatCompletionChunkChoice
CreateChatCompletionStreamResponse = ChatCompletionChunk
ChatCompletionRequestMessage = ChatMessage


# -- helpers -----------------------------------------------------------------------------------

def new_id(prefix: str) -> str:
    """A fresh response id: new_id("cmpl") -> "cmpl-<32 hex digits>" (also "chatcmpl")."""
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    """The current Unix time in whole seconds (the `created` field)."""
    return int(time.time())
