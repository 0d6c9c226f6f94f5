"""A stand-in tool-call format for tests with models that know none: a turn calls ``double``
(toy_tools.py) on its own length while that length is not a multiple of 3. Deterministic in the text, so a replayed episode
calls the same tools; real tool calls, results and token bookkeeping follow from it."""

from __future__ import annotations

import json

from vllm.entrypoints.generate.base.protocol import ExtractedToolCallInformation, FunctionCall, ToolCall
from vllm.tool_parsers.abstract_tool_parser import ToolParser


class LengthCalls(ToolParser):
    def extract_tool_calls(self, model_output: str, request) -> ExtractedToolCallInformation:
        n = len(model_output)
        if n % 3 == 0:
            return ExtractedToolCallInformation(tools_called=False, tool_calls=[], content=model_output)
        call = ToolCall(function=FunctionCall(name="double", arguments=json.dumps({"x": n})))
        return ExtractedToolCallInformation(tools_called=True, tool_calls=[call], content=model_output)
