"""The reasoning/answer fields, on whole responses and on server-sent events split anywhere."""

from __future__ import annotations

import json

import pytest

from grpo_ray.serve.reasoning import StreamAnnotator, annotate_json, split_reasoning

pytestmark = pytest.mark.unit

TEXT = "<reasoning>\n12 + 30 = 42\n</reasoning>\n<answer>\n42\n</answer>"


def test_split() -> None:
    assert split_reasoning(TEXT) == {"reasoning": "12 + 30 = 42", "answer": "42"}
    assert split_reasoning("no tags") == {"reasoning": None, "answer": None}
    assert split_reasoning("<answer> 7") == {"reasoning": None, "answer": "7"}  # cut off: what there is
    assert split_reasoning("<thinking>a</thinking><answer>b</answer>", "thinking") == {"reasoning": "a", "answer": "b"}


def test_json_chat_and_completions_keep_content() -> None:
    chat = annotate_json({"choices": [{"index": 0, "message": {"role": "assistant", "content": TEXT}}]}, "chat", "reasoning")
    msg = chat["choices"][0]["message"]
    assert msg["content"] == TEXT and msg["reasoning"] == "12 + 30 = 42" and msg["answer"] == "42"
    text = annotate_json({"choices": [{"index": 0, "text": TEXT}]}, "text", "reasoning")
    assert text["choices"][0]["answer"] == "42" and text["choices"][0]["text"] == TEXT


def _events(chunks):
    return b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


@pytest.mark.parametrize("cut", [1, 7, 50])
def test_stream_fields_arrive_on_each_choices_final_chunk(cut) -> None:
    pieces = [TEXT[:20], TEXT[20:45], TEXT[45:]]
    chunks = [{"choices": [{"index": i, "delta": {"content": p}, "finish_reason": None}]} for p in pieces for i in (0, 1)]
    chunks[-1]["choices"][0]["finish_reason"] = "stop"
    chunks[-2]["choices"][0]["finish_reason"] = "stop"
    raw = _events(chunks)
    annotator = StreamAnnotator("chat", "reasoning")
    out = b"".join(annotator.feed(raw[i:i + cut]) for i in range(0, len(raw), cut)) + annotator.flush()
    events = [e for e in out.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    parsed = [json.loads(e[len(b"data: "):]) for e in events[:-1]]
    for i in (0, 1):
        assert "".join(c["choices"][0]["delta"]["content"] for c in parsed if c["choices"][0]["index"] == i) == TEXT
    finals = [c["choices"][0] for c in parsed if c["choices"][0]["finish_reason"]]
    assert len(finals) == 2 and all(f["delta"]["answer"] == "42" and f["delta"]["reasoning"] == "12 + 30 = 42" for f in finals)
    assert all("answer" not in c["choices"][0]["delta"] for c in parsed if not c["choices"][0]["finish_reason"])
