"""Reward functions for GRPO, TRL-compatible, and the registry that finds them by name.

Every reward is ``fn(prompts, completions, **kwargs) -> list[float | None]``, one value per
completion; completions are strings or chat messages, dataset columns arrive as kwargs, and None
means "not applicable" (excluded from the reward's mean, as in TRL). Each takes ``tag_style``
("reasoning" or "thinking"). Built-in names and value ranges:

====================  =====================  ==================================================
name                  values                 rewards
====================  =====================  ==================================================
correctness           {0, 1} or None         extracted answer == gold
soft_correctness      {0, 1} or None         first number of the answer == gold
integer               {0, 0.5}               answer is all digits
strict_format         {0, 0.5}               exactly the reasoning/answer template
soft_format           {0, 0.5}               reasoning block then answer block
xml_count             (-inf, 0.5]            0.125 per tag, -0.001 per trailing character
text_after_answer     {-0.5, 0}              nothing but whitespace after ``</answer>``
length_penalty        {penalty, 0}           under ``max_tokens`` tokens (penalty -0.5)
soft_overlong         [-factor, 0]           DAPO's ramp over the last ``soft_punish_cache`` tokens
min_reasoning_length  {0, 0.5}               reasoning of at least ``min_words`` words
pubmedqa_correctness  {0, 1} or None         yes/no/maybe label == gold label
semantic_similarity   [0, 1] or None         embedding cosine with a reference text
lm_judge              [0, 1]                 an LM judge's P(yes) that the final answer is correct
tool_call_format      {-0.25, 0, 0.5}        multi-turn: every tool call could be read and ran
tool_called           {0, 1}                 multi-turn: the episode called a tool
====================  =====================  ==================================================

Importing this package is cheap: the embedder and tokenizers load on first use.
"""

from grpo_ray.rewards.registry import (
    REWARDS,
    RewardSpecError,
    resolve_reward,
    reward_name,
    score_completions,
)
from grpo_ray.rewards.scorer import (
    RewardScorer,
    ScoreResult,
    merge_score_results,
    resolve_specs,
)
from grpo_ray.rewards.parsing import (
    completion_text,
    extract_hash_answer,
    extract_reasoning,
    extract_xml_answer,
    first_number,
    normalize_gold,
)
from grpo_ray.rewards.correctness import correctness_reward, integer_reward, soft_correctness_reward
from grpo_ray.rewards.formatting import (
    count_xml,
    soft_format_reward,
    strict_format_reward,
    text_after_answer_reward,
    xml_count_reward,
)
from grpo_ray.rewards.length import length_penalty_reward, min_reasoning_length_reward, soft_overlong_reward
from grpo_ray.rewards.medical import pubmedqa_correctness_reward, semantic_similarity_reward
from grpo_ray.rewards.judge import lm_judge_reward
from grpo_ray.rewards.tools import tool_call_format_reward, tool_called_reward

__all__ = [
    "REWARDS",
    "RewardScorer",
    "RewardSpecError",
    "ScoreResult",
    "completion_text",
    "correctness_reward",
    "count_xml",
    "extract_hash_answer",
    "extract_reasoning",
    "extract_xml_answer",
    "first_number",
    "integer_reward",
    "length_penalty_reward",
    "lm_judge_reward",
    "merge_score_results",
    "min_reasoning_length_reward",
    "normalize_gold",
    "pubmedqa_correctness_reward",
    "resolve_reward",
    "resolve_specs",
    "reward_name",
    "score_completions",
    "semantic_similarity_reward",
    "soft_correctness_reward",
    "soft_overlong_reward",
    "soft_format_reward",
    "strict_format_reward",
    "text_after_answer_reward",
    "tool_call_format_reward",
    "tool_called_reward",
    "xml_count_reward",
]
