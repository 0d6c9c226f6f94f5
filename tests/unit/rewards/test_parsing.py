from __future__ import annotations

import json
import re

import pytest

from grpo_ray.rewards import (
    completion_text,
    extract_hash_answer,
    extract_reasoning,
    extract_xml_answer,
    first_number,
    normalize_gold,
)
from tests.unit.rewards.helpers import restyle

pytestmark = pytest.mark.unit


# --- references: answer reading as the reference run's rewards did it, in plain code ----------
def reference_extract_xml_answer(text: str) -> str:
    answer = text.split("<answer>")[-1]
    answer = answer.split("</answer>")[0]
    return answer.strip()


def reference_extract_final_answer(text: str) -> str:  # soft correctness's number, without a sign
    answer = reference_extract_xml_answer(text)
    matched = re.search(r"[$]?(\d+(?:,\d+)*)%?", answer)
    if matched:
        return matched.group(1).replace(", ", "").replace(",", "")
    return "0"


TRICKY_ANSWERS = [
    "<reasoning>\nr\n</reasoning>\n<answer>\n42\n</answer>\n",
    "<answer>1</answer><answer> 2 </answer>",  # the last opening tag wins
    "<answer>\n7",  # no closing tag: to the end
    "7\n</answer> trailing",  # no opening tag: from the start
    "no tags at all ",
    "",
    "<answer></answer>",
    "<answer>\n$1,000\n</answer>",
    "<answer>\n72 units\n</answer>",
    "<answer>\n96%\n</answer>",
    "<answer>\nThe total is $27.\n</answer>",
    "<answer>\n3,14159\n</answer>",
    "<answer>\n1,000,000 and 5\n</answer>",
    "<answer>\nnone\n</answer>",
    "<answer>\n4.5\n</answer>",
]


@pytest.mark.parametrize("text", TRICKY_ANSWERS)
def test_extract_xml_answer_matches_reference(text: str, style: str) -> None:
    assert extract_xml_answer(restyle(text, style), style) == reference_extract_xml_answer(text)


@pytest.mark.parametrize("text", TRICKY_ANSWERS)
def test_first_number_matches_reference_for_non_negative_answers(text: str) -> None:
    assert first_number(extract_xml_answer(text)) == reference_extract_final_answer(text)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("$1,000", "1000"),
        ("72 units", "72"),
        ("96%", "96"),
        ("$27", "27"),
        ("-10", "-10"),  # grpo_ray keeps the sign; the reference reads 10
        ("-$3", "-3"),
        ("5-3", "5"),
        ("", "0"),
        ("no number", "0"),
    ],
)
def test_first_number(answer: str, expected: str) -> None:
    assert first_number(answer) == expected


def test_extract_xml_answer_edge_cases() -> None:
    assert extract_xml_answer("<answer>\n 12 \n</answer>") == "12"
    assert extract_xml_answer("<answer>1</answer> then <answer>2</answer>") == "2"
    assert extract_xml_answer("bare 5") == "bare 5"
    # a reasoning tag never counts as the answer
    assert extract_xml_answer("<reasoning>\nx\n</reasoning>", "reasoning") == "<reasoning>\nx\n</reasoning>"


def test_extract_xml_answer_rejects_unknown_style() -> None:
    with pytest.raises(ValueError, match="unknown tag_style 'pondering'"):
        extract_xml_answer("<answer>1</answer>", "pondering")


def test_extract_reasoning(style: str) -> None:
    text = restyle("<reasoning>\n a b \n</reasoning>\n<answer>\n1\n</answer>", style)
    assert extract_reasoning(text, style) == "a b"
    assert extract_reasoning(restyle("<reasoning>\nunclosed", style), style) is None
    assert extract_reasoning("<answer>1</answer>", style) is None


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("plain", "plain"),
        ([{"role": "assistant", "content": "a"}], "a"),
        ([{"role": "assistant", "content": "a"}, {"role": "tool", "content": "t"},
          {"role": "assistant", "content": "b"}], "b"),  # last assistant turn
        ([{"content": "no roles"}], "no roles"),  # no roles: the first message, completion[0]["content"]
        ([{"role": "assistant", "content": None}], ""),
        ([{"role": "assistant", "content": [{"type": "text", "text": "x"}, {"type": "text", "text": "y"}]}], "xy"),
        ({"role": "assistant", "content": "single"}, "single"),
        ([], ""),
    ],
)
def test_completion_text(completion: object, expected: str) -> None:
    assert completion_text(completion) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Natalia sold 48/2 = <<48/2=24>>24 clips.\n#### 72", "72"),
        ("#### 1,080", "1080"),
        ("####  -10 ", "-10"),
        ("no marker", None),
        ("a #### 5 #### 6", "5"),  # the part after the first marker, as text.split("####")[1] gives
    ],
)
def test_extract_hash_answer(text: str, expected: str | None) -> None:
    assert extract_hash_answer(text) == expected


@pytest.mark.parametrize(
    ("gold", "expected"),
    [("#### 72", "72"), ("72", "72"), (" 1,080 ", "1080"), (72, "72"), (None, None), ("", None), ("  ", None),
     ("yes", "yes"), ("3, 4", "3, 4")],
)
def test_normalize_gold(gold: object, expected: str | None) -> None:
    assert normalize_gold(gold) == expected


def test_every_gsm8k_gold_normalises_to_an_integer(shared_data) -> None:
    golds = []
    for split in ("train", "test"):
        with open(shared_data / "gsm8k" / f"{split}.jsonl") as f:
            golds += [json.loads(line)["answer"] for line in f]
    normalised = [normalize_gold(g) for g in golds]
    assert all(re.fullmatch(r"-?\d+", g) for g in normalised)
    # the reason extract_hash_answer drops commas: GSM8K has golds like "1,080"
    assert sum("," in g.split("####")[1] for g in golds) > 50
