"""The request bodies of ``/v1/chat/completions`` and ``/v1/completions``, checked as OpenAI checks them.

Strict pydantic models (``strict=True``): a string is not an integer, ``true`` is not a number and
``"yes"`` is not a boolean, where vLLM's own protocol classes coerce all three. Types, required
fields and ranges follow OpenAI's API reference (its OpenAPI spec); vLLM's extension fields that
set sampling get their types checked too (vLLM checks their ranges). Fields neither knows pass
through untouched (``extra="allow"``), so vLLM's other extensions keep working.

Unions are chosen by the JSON type of the value (:func:`one_of`), so a value of the wrong type
gets one error saying what was expected, and a value of the right type is checked by that branch
alone. Each branch's tag (``<string>``, ``<array>``...) appears in pydantic's error location;
:func:`grpo_ray.serve.validation.param_path` drops it. No Ray or vLLM import here.

Deliberately stricter than vLLM: ``top_logprobs`` 0-20 and completions ``logprobs`` 0-5 (vLLM
also takes -1, "all"), ``stop`` 1-4 strings, ``n`` up to 128, ``temperature`` up to 2,
``logit_bias`` integers in [-100, 100], ``model`` required and ``role`` one of OpenAI's.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator
from pydantic_core import PydanticCustomError

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
Int64 = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]
NonEmptyStr = Annotated[str, Field(min_length=1)]

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
# the content part types OpenAI accepts in each role's content array
ROLE_PARTS = {"system": ("text",), "developer": ("text",), "tool": ("text",), "assistant": ("text", "refusal"),
              "user": ("text", "image_url", "input_audio", "file"), "function": ()}
OPENAI_PARTS = ("text", "image_url", "input_audio", "file", "refusal")
# vLLM's own part types (vllm.renderers.chat_utils.MM_PARSER_MAP in vLLM 0.32), allowed in any role
VLLM_PARTS = ("thinking", "input_text", "output_text", "input_image", "image_embeds", "audio_embeds",
              "video_embeds", "prompt_embeds", "image_pil", "audio_url", "video_url", "tool_reference")


def json_kind(value: Any) -> str:
    """The JSON type of a parsed value: null, boolean, integer, number, string, array or object."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), type(value).__name__)


def one_of(expected: str, **branches: Any) -> Any:
    """A union of ``branches`` keyed by JSON type (``string=str, array=list[str]``); any other type
    is an ``invalid_type`` error whose message is ``expected`` ("a string or an array of strings")."""
    def choose(value: Any) -> Optional[str]:
        kind = json_kind(value)
        return f"<{kind}>" if kind in branches else None

    tagged = tuple(Annotated[t, Tag(f"<{kind}>")] for kind, t in branches.items())
    return Annotated[Union[tagged], Discriminator(choose, custom_error_type="invalid_type",
                                                  custom_error_message=expected)]


def missing(field: str) -> PydanticCustomError:
    """A required ``field`` of the object being checked is absent (raised from a model validator)."""
    return PydanticCustomError("missing", "Field required", {"field": field})


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow", allow_inf_nan=False)


class ImageURL(Strict):
    url: str
    detail: Optional[Literal["auto", "low", "high"]] = None


class InputAudio(Strict):
    data: str
    format: Literal["wav", "mp3"]


class FileRef(Strict):
    file_data: Optional[str] = None
    file_id: Optional[str] = None
    filename: Optional[str] = None


class ContentPart(Strict):
    type: str  # which types a role takes is Message's rule; vLLM's own types carry their own fields
    text: Optional[str] = None
    refusal: Optional[str] = None
    image_url: Optional[ImageURL] = None
    input_audio: Optional[InputAudio] = None
    file: Optional[FileRef] = None

    @model_validator(mode="after")
    def _carries_its_field(self) -> "ContentPart":
        if self.type in OPENAI_PARTS and getattr(self, self.type) is None:  # {"type": "text", "text": ...}
            raise missing(self.type)
        return self


Content = one_of("a string or an array of content parts", string=str,
                 array=Annotated[list[ContentPart], Field(min_length=1)])


class FunctionCall(Strict):
    name: str
    arguments: str


class CustomCall(Strict):
    name: str
    input: str


class ToolCall(Strict):
    id: str
    type: Literal["function", "custom"]
    function: Optional[FunctionCall] = None
    custom: Optional[CustomCall] = None

    @model_validator(mode="after")
    def _carries_its_field(self) -> "ToolCall":
        if getattr(self, self.type) is None:
            raise missing(self.type)
        return self


class Message(Strict):
    role: Literal[ROLES]  # type: ignore[valid-type]
    content: Optional[Content] = None
    name: Optional[str] = None
    tool_call_id: Optional[str] = None
    tool_calls: Optional[list[ToolCall]] = None
    function_call: Optional[FunctionCall] = None
    refusal: Optional[str] = None
    audio: Optional[dict[str, Any]] = None

    @model_validator(mode="after")
    def _role_rules(self) -> "Message":
        """OpenAI's per-role rules: content is required (an assistant may leave it out only when it
        made tool calls), a tool message names its call, a function message its function, and a
        content array holds only the part types that role takes."""
        calls = bool(self.tool_calls) or self.function_call is not None
        if self.role == "function":
            if "content" not in self.model_fields_set:
                raise missing("content")
            if self.name is None:
                raise missing("name")
        elif self.content is None and not (self.role == "assistant" and calls):
            raise missing("content")
        if self.role == "tool" and self.tool_call_id is None:
            raise missing("tool_call_id")
        if isinstance(self.content, list):
            allowed = ROLE_PARTS[self.role]
            if not allowed:
                raise PydanticCustomError("invalid_type", "a string or null", {"field": "content", "got": "an array"})
            for i, part in enumerate(self.content):
                if part.type not in allowed and part.type not in VLLM_PARTS:
                    raise PydanticCustomError("invalid_value", "unsupported content part type", {
                        "field": f"content[{i}].type", "value": part.type, "expected": allowed})
        return self


class StreamOptions(Strict):
    include_usage: Optional[bool] = None
    include_obfuscation: Optional[bool] = None
    continuous_usage_stats: Optional[bool] = None  # vLLM


class FunctionDefinition(Strict):
    name: NonEmptyStr
    description: Optional[str] = None
    parameters: Optional[dict[str, Any]] = None
    strict: Optional[bool] = None


class Tool(Strict):
    type: Literal["function", "custom"]
    function: Optional[FunctionDefinition] = None
    custom: Optional[dict[str, Any]] = None

    @model_validator(mode="after")
    def _carries_its_field(self) -> "Tool":
        if getattr(self, self.type) is None:
            raise missing(self.type)
        return self


class NamedFunction(Strict):
    name: str


class ToolChoice(Strict):
    type: Literal["function", "custom", "allowed_tools"]
    function: Optional[NamedFunction] = None


class ResponseFormat(Strict):
    type: Literal["text", "json_object", "json_schema", "structural_tag"]  # the last is vLLM's
    json_schema: Optional[dict[str, Any]] = None


Stop = one_of("a string or an array of strings", string=str,
              array=Annotated[list[str], Field(min_length=1, max_length=4)])
Penalty = Annotated[float, Field(ge=-2, le=2)]
TokenId = Annotated[int, Field(ge=0, le=INT64_MAX)]
LogitBias = dict[Annotated[str, Field(pattern=r"^[0-9]+$")], Annotated[int, Field(ge=-100, le=100)]]


class GenerationRequest(Strict):
    """The fields chat and text completions share: OpenAI's, then vLLM's sampling extensions."""

    model: NonEmptyStr
    frequency_penalty: Optional[Penalty] = None
    presence_penalty: Optional[Penalty] = None
    logit_bias: Optional[LogitBias] = None
    n: Optional[Annotated[int, Field(ge=1, le=128)]] = None
    seed: Optional[Int64] = None
    stop: Optional[Stop] = None
    stream: Optional[bool] = None
    stream_options: Optional[StreamOptions] = None
    temperature: Optional[Annotated[float, Field(ge=0, le=2)]] = None
    top_p: Optional[Annotated[float, Field(ge=0, le=1)]] = None
    user: Optional[str] = None
    # vLLM's extensions (types only; vLLM checks their values)
    top_k: Optional[Int64] = None
    min_p: Optional[float] = None
    repetition_penalty: Optional[float] = None
    length_penalty: Optional[float] = None
    min_tokens: Optional[Int64] = None
    use_beam_search: Optional[bool] = None
    ignore_eos: Optional[bool] = None
    include_stop_str_in_output: Optional[bool] = None
    skip_special_tokens: Optional[bool] = None
    spaces_between_special_tokens: Optional[bool] = None
    stop_token_ids: Optional[list[Int64]] = None
    allowed_token_ids: Optional[list[Int64]] = None
    bad_words: Optional[list[str]] = None
    prompt_logprobs: Optional[Int64] = None
    truncate_prompt_tokens: Optional[Int64] = None
    add_special_tokens: Optional[bool] = None
    priority: Optional[Int64] = None
    request_id: Optional[str] = None
    return_token_ids: Optional[bool] = None
    return_tokens_as_token_ids: Optional[bool] = None


class ChatCompletionRequest(GenerationRequest):
    messages: Annotated[list[Message], Field(min_length=1)]
    max_tokens: Optional[Annotated[int, Field(ge=1, le=INT64_MAX)]] = None
    max_completion_tokens: Optional[Annotated[int, Field(ge=1, le=INT64_MAX)]] = None
    logprobs: Optional[bool] = None
    top_logprobs: Optional[Annotated[int, Field(ge=0, le=20)]] = None
    response_format: Optional[ResponseFormat] = None
    tools: Optional[list[Tool]] = None
    tool_choice: Optional[one_of("'none', 'auto', 'required' or a tool choice object",
                                 string=Literal["none", "auto", "required"], object=ToolChoice)] = None
    parallel_tool_calls: Optional[bool] = None
    functions: Optional[Annotated[list[FunctionDefinition], Field(min_length=1, max_length=128)]] = None
    function_call: Optional[one_of("'none', 'auto' or a function name object",
                                   string=Literal["none", "auto"], object=NamedFunction)] = None
    reasoning_effort: Optional[Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]] = None
    verbosity: Optional[Literal["low", "medium", "high"]] = None
    service_tier: Optional[Literal["auto", "default", "flex", "scale", "priority", "fast"]] = None
    modalities: Optional[list[Literal["text", "audio"]]] = None
    metadata: Optional[Annotated[dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]],
                                 Field(max_length=16)]] = None
    store: Optional[bool] = None
    audio: Optional[dict[str, Any]] = None
    prediction: Optional[dict[str, Any]] = None
    web_search_options: Optional[dict[str, Any]] = None
    safety_identifier: Optional[Annotated[str, Field(max_length=64)]] = None
    prompt_cache_key: Optional[str] = None
    # vLLM's chat extensions
    echo: Optional[bool] = None
    add_generation_prompt: Optional[bool] = None
    continue_final_message: Optional[bool] = None
    include_reasoning: Optional[bool] = None
    chat_template: Optional[str] = None
    chat_template_kwargs: Optional[dict[str, Any]] = None
    documents: Optional[list[dict[str, Any]]] = None


def _prompt_kind(value: Any) -> Optional[str]:
    if isinstance(value, str):
        return "<string>"
    if not isinstance(value, list):
        return None
    first = value[0] if value else ""
    if isinstance(first, int) and not isinstance(first, bool):
        return "<tokens>"
    return "<token arrays>" if isinstance(first, list) else "<strings>"


Tokens = Annotated[list[TokenId], Field(min_length=1)]
Prompt = Annotated[Union[Annotated[str, Tag("<string>")],
                         Annotated[Annotated[list[str], Field(min_length=1)], Tag("<strings>")],
                         Annotated[Tokens, Tag("<tokens>")],
                         Annotated[Annotated[list[Tokens], Field(min_length=1)], Tag("<token arrays>")]],
                   Discriminator(_prompt_kind, custom_error_type="invalid_type",
                                 custom_error_message="a string, an array of strings, an array of token IDs "
                                                      "or an array of token ID arrays")]


class CompletionRequest(GenerationRequest):
    prompt: Optional[Prompt] = None
    best_of: Optional[Annotated[int, Field(ge=0, le=20)]] = None
    echo: Optional[bool] = None
    logprobs: Optional[Annotated[int, Field(ge=0, le=5)]] = None
    max_tokens: Optional[Annotated[int, Field(ge=0, le=INT64_MAX)]] = None
    suffix: Optional[str] = None

    @model_validator(mode="after")
    def _has_a_prompt(self) -> "CompletionRequest":
        # OpenAI requires the key (null is allowed); vLLM also takes prompt_embeds in its place
        if "prompt" not in self.model_fields_set and "prompt_embeds" not in (self.model_extra or {}):
            raise missing("prompt")
        return self


REQUESTS: dict[str, type[GenerationRequest]] = {"chat": ChatCompletionRequest, "completions": CompletionRequest}
