"""llama-cpp-python's `llama_types` names (`from llama_cpp.llama_types import ...`), with its field
names and which fields a dict may leave out.

Shapes that pybonsai.types already declares the same way are re-exported from there; the others are
declared here. Optional fields live in `total=False` subclasses (the package supports Python 3.9,
where typing has no NotRequired). Several of llama-cpp-python's names are aliases of one shape;
they are aliases here too."""
from __future__ import annotations

from typing import Any, Dict, List, Literal, Optional, TypedDict, Union

from .types import (
    ChatCompletionFunctionCall,
    ChatCompletionMessageToolCall,
    CompletionChoice,
    CompletionChunk as _CompletionHead,
    CompletionLogprobs,
    CompletionUsage,
    CreateEmbeddingResponse,
    Embedding,
    EmbeddingUsage,
)

__all__ = [
    "JsonType", "EmbeddingUsage", "Embedding", "CreateEmbeddingResponse", "CompletionLogprobs",
    "CompletionChoice", "CompletionUsage", "CreateCompletionResponse", "ChatCompletionResponseFunctionCall",
    "ChatCompletionResponseMessage", "ChatCompletionFunction", "ChatCompletionTopLogprobToken",
    "ChatCompletionLogprobToken", "ChatCompletionLogprobs", "ChatCompletionResponseChoice",
    "CreateChatCompletionResponse", "ChatCompletionMessageToolCallChunkFunction",
    "ChatCompletionMessageToolCallChunk", "ChatCompletionStreamResponseDeltaEmpty",
    "ChatCompletionStreamResponseDeltaFunctionCall", "ChatCompletionStreamResponseDelta",
    "ChatCompletionStreamResponseChoice", "CreateChatCompletionStreamResponse", "ChatCompletionFunctions",
    "ChatCompletionFunctionCallOption", "ChatCompletionRequestResponseFormat",
    "ChatCompletionRequestMessageContentPartText", "ChatCompletionRequestMessageContentPartImageImageUrl",
    "ChatCompletionRequestMessageContentPartImage", "ChatCompletionRequestMessageContentPart",
    "ChatCompletionRequestSystemMessage", "ChatCompletionRequestUserMessage",
    "ChatCompletionMessageToolCallFunction", "ChatCompletionMessageToolCall", "ChatCompletionMessageToolCalls",
    "ChatCompletionRequestAssistantMessageFunctionCall", "ChatCompletionRequestAssistantMessage",
    "ChatCompletionRequestToolMessage", "ChatCompletionRequestFunctionMessage", "ChatCompletionRequestMessage",
    "ChatCompletionRequestFunctionCallOption", "ChatCompletionRequestFunctionCall",
    "ChatCompletionFunctionParameters", "ChatCompletionToolFunction", "ChatCompletionTool",
    "ChatCompletionNamedToolChoiceFunction", "ChatCompletionNamedToolChoice", "ChatCompletionToolChoiceOption",
    # older names of the same shapes
    "EmbeddingData", "CompletionChunk", "Completion", "CreateCompletionStreamResponse", "ChatCompletionMessage",
    "ChatCompletionChoice", "ChatCompletion", "ChatCompletionChunkDeltaEmpty", "ChatCompletionChunkChoice",
    "ChatCompletionChunkDelta", "ChatCompletionChunk", "ChatCompletionStreamResponse",
    "ChatCompletionResponseFunction", "ChatCompletionFunctionCall",
]

JsonType = Union[None, int, str, bool, List[Any], Dict[str, Any]]
ChatCompletionFunctionParameters = Dict[str, JsonType]

# {"name": ..., "arguments": <JSON text>}: one shape under several names.
ChatCompletionResponseFunctionCall = ChatCompletionFunctionCall
ChatCompletionMessageToolCallFunction = ChatCompletionFunctionCall
ChatCompletionStreamResponseDeltaFunctionCall = ChatCompletionFunctionCall
ChatCompletionRequestAssistantMessageFunctionCall = ChatCompletionFunctionCall
ChatCompletionMessageToolCalls = List[ChatCompletionMessageToolCall]


class _Named(TypedDict):
    name: str


# {"name": ...}: a function chosen by name.
ChatCompletionFunctionCallOption = _Named
ChatCompletionRequestFunctionCallOption = _Named
ChatCompletionNamedToolChoiceFunction = _Named


# -- responses ---------------------------------------------------------------------------------

class CreateCompletionResponse(_CompletionHead, total=False):
    """A text completion; streamed chunks have no `usage`."""

    usage: CompletionUsage


class _ResponseMessageRequired(TypedDict):
    content: Optional[str]
    role: Literal["assistant", "function"]


class ChatCompletionResponseMessage(_ResponseMessageRequired, total=False):
    tool_calls: ChatCompletionMessageToolCalls
    function_call: ChatCompletionFunctionCall  # deprecated by OpenAI


class ChatCompletionTopLogprobToken(TypedDict):
    token: str
    logprob: float
    bytes: Optional[List[int]]


class ChatCompletionLogprobToken(ChatCompletionTopLogprobToken):
    top_logprobs: List[ChatCompletionTopLogprobToken]


class ChatCompletionLogprobs(TypedDict):
    content: Optional[List[ChatCompletionLogprobToken]]
    refusal: Optional[List[ChatCompletionLogprobToken]]


class ChatCompletionResponseChoice(TypedDict):
    index: int
    message: ChatCompletionResponseMessage
    logprobs: Optional[ChatCompletionLogprobs]
    finish_reason: Optional[str]


class CreateChatCompletionResponse(TypedDict):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: List[ChatCompletionResponseChoice]
    usage: CompletionUsage


class ChatCompletionMessageToolCallChunkFunction(TypedDict):
    name: Optional[str]
    arguments: str


class _ToolCallChunkRequired(TypedDict):
    index: int
    type: Literal["function"]
    function: ChatCompletionMessageToolCallChunkFunction


class ChatCompletionMessageToolCallChunk(_ToolCallChunkRequired, total=False):
    id: str


class ChatCompletionStreamResponseDeltaEmpty(TypedDict):
    """The delta of a stream's last chunk: {}."""


class ChatCompletionStreamResponseDelta(TypedDict, total=False):
    content: Optional[str]
    function_call: Optional[ChatCompletionFunctionCall]  # deprecated by OpenAI
    tool_calls: Optional[List[ChatCompletionMessageToolCallChunk]]
    role: Optional[Literal["system", "user", "assistant", "tool"]]


class _StreamChoiceRequired(TypedDict):
    index: int
    delta: Union[ChatCompletionStreamResponseDelta, ChatCompletionStreamResponseDeltaEmpty]
    finish_reason: Optional[Literal["stop", "length", "tool_calls", "function_call"]]


class ChatCompletionStreamResponseChoice(_StreamChoiceRequired, total=False):
    logprobs: Optional[ChatCompletionLogprobs]


class CreateChatCompletionStreamResponse(TypedDict):
    id: str
    model: str
    object: Literal["chat.completion.chunk"]
    created: int
    choices: List[ChatCompletionStreamResponseChoice]


# -- requests ----------------------------------------------------------------------------------

class _FunctionRequired(TypedDict):
    name: str
    parameters: ChatCompletionFunctionParameters


class ChatCompletionFunction(_FunctionRequired, total=False):
    """A callable function as the legacy `functions=[...]` and `tools=[{"function": ...}]` give it."""

    description: str


ChatCompletionFunctions = ChatCompletionFunction
ChatCompletionToolFunction = ChatCompletionFunction


class _ResponseFormatRequired(TypedDict):
    type: Literal["text", "json_object"]


class ChatCompletionRequestResponseFormat(_ResponseFormatRequired, total=False):
    schema: JsonType


class ChatCompletionRequestMessageContentPartText(TypedDict):
    type: Literal["text"]
    text: str


class _ImageUrlRequired(TypedDict):
    url: str


class ChatCompletionRequestMessageContentPartImageImageUrl(_ImageUrlRequired, total=False):
    detail: Literal["auto", "low", "high"]


class ChatCompletionRequestMessageContentPartImage(TypedDict):
    type: Literal["image_url"]
    image_url: Union[str, ChatCompletionRequestMessageContentPartImageImageUrl]


ChatCompletionRequestMessageContentPart = Union[
    ChatCompletionRequestMessageContentPartText, ChatCompletionRequestMessageContentPartImage]


class ChatCompletionRequestSystemMessage(TypedDict):
    role: Literal["system"]
    content: Optional[str]


class ChatCompletionRequestUserMessage(TypedDict):
    role: Literal["user"]
    content: Optional[Union[str, List[ChatCompletionRequestMessageContentPart]]]


class _AssistantMessageRequired(TypedDict):
    role: Literal["assistant"]


class ChatCompletionRequestAssistantMessage(_AssistantMessageRequired, total=False):
    content: str
    tool_calls: ChatCompletionMessageToolCalls
    function_call: ChatCompletionFunctionCall  # deprecated by OpenAI


class ChatCompletionRequestToolMessage(TypedDict):
    role: Literal["tool"]
    content: Optional[str]
    tool_call_id: str


class ChatCompletionRequestFunctionMessage(TypedDict):
    role: Literal["function"]
    content: Optional[str]
    name: str


ChatCompletionRequestMessage = Union[
    ChatCompletionRequestSystemMessage, ChatCompletionRequestUserMessage, ChatCompletionRequestAssistantMessage,
    ChatCompletionRequestToolMessage, ChatCompletionRequestFunctionMessage]
ChatCompletionRequestFunctionCall = Union[Literal["none", "auto"], ChatCompletionRequestFunctionCallOption]


class ChatCompletionTool(TypedDict):
    type: Literal["function"]
    function: ChatCompletionToolFunction


class ChatCompletionNamedToolChoice(TypedDict):
    type: Literal["function"]
    function: ChatCompletionNamedToolChoiceFunction


ChatCompletionToolChoiceOption = Union[Literal["none", "auto", "required"], ChatCompletionNamedToolChoice]


# -- llama-cpp-python's older names ------------------------------------------------------------

EmbeddingData = Embedding
CompletionChunk = CreateCompletionResponse
Completion = CreateCompletionResponse
CreateCompletionStreamResponse = CreateCompletionResponse
ChatCompletionMessage = ChatCompletionResponseMessage
ChatCompletionChoice = ChatCompletionResponseChoice
ChatCompletion = CreateChatCompletionResponse
ChatCompletionChunkDeltaEmpty = ChatCompletionStreamResponseDeltaEmpty
ChatCompletionChunkChoice = ChatCompletionStreamResponseChoice
ChatCompletionChunkDelta = ChatCompletionStreamResponseDelta
ChatCompletionChunk = CreateChatCompletionStreamResponse
ChatCompletionStreamResponse = CreateChatCompletionStreamResponse
ChatCompletionResponseFunction = ChatCompletionFunction
