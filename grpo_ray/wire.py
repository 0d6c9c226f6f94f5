"""The wire contract: every object that crosses between the driver, the rollout workers and the learners.

One module, imported by all three sides and importing none of them, so the contract is stated once:

- :class:`SamplingConfig`, :class:`GenerationRequest`: what the driver asks a rollout engine for;
- :class:`RolloutBatch`: groups of completions with token ids, sampling logprobs, finish reasons, a
  per-token loss mask and the policy version that sampled them;
- :class:`TrainShard`: one learner's rows of a step, with advantages and the per-token loss mask;
- :class:`WeightUpdate`: a new policy version on its way from the learners to the engines. A LoRA
  adapter (:class:`LoraAdapter`) is one kind, the full weights in buckets (:class:`FullWeights`) the
  other; :class:`WeightsHandle` is how a generation shard names the version it must be sampled with.

Plain lists and numpy-backed tensors, no Ray objects besides the refs inside handles: these pickle
cheaply through the Ray object store, and the learner pads them into tensors itself.
Shape letters: B prompts, G group size, N = B*G completions, T_i tokens of row i.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from grpo_ray.utils.reduce import reduce_named


@dataclass(frozen=True)
class SamplingConfig:
    """Sampling settings shared by every engine (temperature 0 means greedy)."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    max_tokens: int = 256
    seed: Optional[int] = None  # base seed; each prompt gets its own (``per_prompt_seeds``)


@dataclass(frozen=True)
class WeightsHandle:
    """The policy version a generation must be sampled with, and where that version's
    :class:`WeightUpdate` lies in the object store.

    The ref sits inside this object, so Ray hands it to the worker unresolved: a worker that already
    holds ``version`` never fetches or deserialises the update; one that does not (a restarted
    worker, or async generation ahead of the sync) fetches it first."""

    version: int
    ref: Any  # ray.ObjectRef of a WeightUpdate
    # which line of versions: a run (and how often it went back to a checkpoint), so that rollout
    # workers shared between runs, or a run that rewound, never take another line's version k for theirs
    lineage: str = ""
    strategy: str = ""  # the run's weight-sync strategy ("" : the worker's own), for a worker another run made

    @property
    def key(self) -> tuple[str, int]:
        return (self.lineage, self.version)


@dataclass
class GenerationRequest:
    """B prompts as chat messages (TRL's conversational format), sampled under ``weights``.

    ``seeds``: one per prompt, so which worker or batch a prompt lands in changes nothing.
    ``weights``: None samples with whatever the engine holds (evaluation outside a run)."""

    prompts: list[list[dict[str, str]]]
    sampling: SamplingConfig
    seeds: Optional[list[Optional[int]]] = None
    weights: Optional[WeightsHandle] = None
    # [B] each prompt's other dataset columns (the answer, ...): what a multi-turn rollout's environment
    # starts its episodes from (``reset(**row)``); None where nothing needs them
    columns: Optional[list[dict[str, Any]]] = None
    # the rollout kind (a grpo_ray.rollout.kinds.KindSpec) to make the trajectories with; None: the
    # worker's own. Carried in the shard, so a worker Ray restarted (or one another run made) makes the
    # run's kind of trajectories.
    kind: Any = None
    # in-flight weight updates: ``weights`` is the oldest version to sample with; the worker keeps a newer
    # one it holds, and loads versions offered while it generates between decoding steps
    inflight_updates: bool = False


@dataclass
class RolloutBatch:
    """B prompts x G trajectories, laid out group by group (row i*G+j).

    A trajectory is what one rollout kind (``grpo_ray.rollout.kinds``) made of a prompt: the token
    ids after the prompt, exactly as they were sampled (plus, for multi-turn kinds, the tokens a tool
    or an environment inserted, with loss mask 0), and the conversation they form, which is what
    reward functions receive as ``completions`` (TRL's conversational format)."""

    prompt_ids: list[list[int]]  # [B][P_b]
    completion_ids: list[list[int]]  # [N][T_i]
    completion_texts: list[str]  # [N] the decoded completion_ids
    sampling_logprobs: list[list[float]]  # [N][T_i] logprob of each token under the sampler (0.0 where not sampled)
    finish_reasons: list[str]  # [N] "stop" (EOS or stop string) or "length" (hit a token limit)
    group_size: int
    policy_version: int  # weights version that sampled every row (the oldest, see token_versions); -1: the untouched base model
    # [N][T_i] 1 where the token is the policy's own and may enter the loss (0, e.g., for tokens a tool
    # or an environment inserted). None: every completion token.
    loss_mask: Optional[list[list[int]]] = None
    # [N] the messages each trajectory adds after its prompt (an assistant reply; with tools, the
    # assistant and tool turns). None: one assistant message holding completion_texts.
    completion_messages: Optional[list[list[dict[str, Any]]]] = None
    # [N] per-trajectory counts of a multi-turn rollout (turns, tool_calls, tool_errors, tool_timeouts,
    # malformed_tool_calls, model_tokens, tool_tokens, limit_hit); None for single-turn rollouts
    episode_stats: Optional[list[dict[str, float]]] = None
    # [N][T_i] the weights version that sampled each token, where a newer version was loaded while the
    # batch was generated (in-flight weight updates); None: every token was sampled by policy_version
    token_versions: Optional[list[list[int]]] = None
    # per-worker numbers (seconds, token counts); joined by kind when shards are concatenated
    stats: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.completion_ids)

    def is_truncated(self) -> list[bool]:
        return [r == "length" for r in self.finish_reasons]

    def token_loss_mask(self) -> list[list[int]]:
        """[N][T_i] the loss mask, all ones where the engine gave none."""
        if self.loss_mask is not None:
            return self.loss_mask
        return [[1] * len(c) for c in self.completion_ids]

    def versions_per_token(self) -> list[list[int]]:
        """[N][T_i] the weights version that sampled each token (``policy_version`` where none was recorded)."""
        if self.token_versions is not None:
            return self.token_versions
        return [[self.policy_version] * len(c) for c in self.completion_ids]

    def conversations(self) -> list[list[dict[str, Any]]]:
        """[N] the messages of each trajectory (what reward functions receive as ``completions``)."""
        if self.completion_messages is not None:
            return self.completion_messages
        return [[{"role": "assistant", "content": text}] for text in self.completion_texts]

    def final_texts(self) -> list[str]:
        """[N] each trajectory's last assistant message: the reply whose answer is scored."""
        out = []
        for messages in self.conversations():
            replies = [m for m in messages if m.get("role") == "assistant"]
            out.append(str(replies[-1].get("content") or "") if replies else "")
        return out

    def group_prompt_ids(self) -> list[list[int]]:
        """Prompt ids repeated per completion: [N][P]."""
        return [p for p in self.prompt_ids for _ in range(self.group_size)]

    def select_groups(self, groups: list[int]) -> "RolloutBatch":
        """The rows of ``groups`` (group indices), in that order, keeping this batch's stats."""
        g = self.group_size
        rows = [i * g + j for i in groups for j in range(g)]

        def pick(values):
            return None if values is None else [values[r] for r in rows]

        return RolloutBatch(
            prompt_ids=[self.prompt_ids[i] for i in groups], completion_ids=pick(self.completion_ids),
            completion_texts=pick(self.completion_texts), sampling_logprobs=pick(self.sampling_logprobs),
            finish_reasons=pick(self.finish_reasons), group_size=g, policy_version=self.policy_version,
            loss_mask=pick(self.loss_mask), completion_messages=pick(self.completion_messages),
            episode_stats=pick(self.episode_stats), token_versions=pick(self.token_versions), stats=dict(self.stats),
        )

    @staticmethod
    def concat(parts: list["RolloutBatch"]) -> "RolloutBatch":
        """Join the shards that several rollout workers produced, in order. Stats are joined by what they
        are (:func:`grpo_ray.utils.reduce.reduce_named`): seconds and maxima by the slowest worker,
        counts summed."""
        if not parts:
            raise ValueError("no rollout shards to join")
        g = parts[0].group_size
        if any(p.group_size != g for p in parts):
            raise ValueError("rollout shards disagree on group_size")
        masks = None
        if any(p.loss_mask is not None for p in parts):
            masks = [row for p in parts for row in p.token_loss_mask()]
        messages = None
        if any(p.completion_messages is not None for p in parts):
            messages = [row for p in parts for row in p.conversations()]
        episode_stats = None
        if any(p.episode_stats is not None for p in parts):
            episode_stats = [row for p in parts for row in (p.episode_stats or [{}] * len(p))]
        versions = None
        if any(p.token_versions is not None for p in parts):
            versions = [row for p in parts for row in p.versions_per_token()]
        return RolloutBatch(
            prompt_ids=[x for p in parts for x in p.prompt_ids],
            completion_ids=[x for p in parts for x in p.completion_ids],
            completion_texts=[x for p in parts for x in p.completion_texts],
            sampling_logprobs=[x for p in parts for x in p.sampling_logprobs],
            finish_reasons=[x for p in parts for x in p.finish_reasons],
            group_size=g,
            policy_version=min(p.policy_version for p in parts),  # the oldest weights in the batch
            loss_mask=masks,
            completion_messages=messages,
            episode_stats=episode_stats,
            token_versions=versions,
            stats=reduce_named([p.stats for p in parts]),
        )


@dataclass
class TrainShard:
    """One learner's rows of a step, laid out as in the rollout (row i*G+j).

    ``loss_mask`` [n][T_i] is 0 on tokens the loss must not see: tokens that are not the policy's own,
    and whole rows taken out (truncated completions under ``mask_truncated_completions``, groups with
    no reward spread under ``drop_zero_std_groups``). The global counts are over every learner's
    shard, so the loss is the same however the step is split (``grpo_ray.algo.aggregation``)."""

    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    advantages: list[float]
    loss_mask: list[list[int]]
    global_num_tokens: float  # tokens in the loss over every learner's shard
    global_num_sequences: int  # rows with at least one token in the loss, over every shard
    sampling_logprobs: Optional[list[list[float]]] = None


def shard_slices(n: int, parts: int, unit: int = 1) -> list[slice]:
    """Contiguous slices of ``n`` items in whole units of ``unit`` (a group of G completions, say),
    shared as evenly as possible over at most ``parts`` slices, the first ones a unit longer. Fewer
    slices come back when there are fewer units than parts: never an empty one. The one way work is
    split over a role's actors (rollout, reward and learner shards).

    >>> shard_slices(5, 2)
    [slice(0, 3, None), slice(3, 5, None)]
    >>> shard_slices(12, 4, unit=2)
    [slice(0, 4, None), slice(4, 8, None), slice(8, 10, None), slice(10, 12, None)]
    >>> shard_slices(4, 3, unit=2)
    [slice(0, 2, None), slice(2, 4, None)]
    """
    if unit < 1 or parts < 1:
        raise ValueError(f"shard_slices: unit={unit} and parts={parts} must be >= 1")
    if n % unit:
        raise ValueError(f"shard_slices: {n} items are not whole units of {unit}")
    units = n // unit
    used = min(parts, units)
    out, start = [], 0
    for i in range(used):
        size = (units // used + (1 if i < units % used else 0)) * unit
        out.append(slice(start, start + size))
        start += size
    return out


def split_into_shards(
    prompt_ids: list[list[int]],
    completion_ids: list[list[int]],
    advantages: list[float],
    loss_mask: list[list[int]],
    num_learners: int,
    sampling_logprobs: Optional[list[list[float]]] = None,
) -> list[TrainShard]:
    """Split a step's N rows evenly over the learners; the global counts make the loss split-invariant."""
    global_tokens = float(sum(sum(m) for m in loss_mask))
    global_sequences = int(sum(1 for m in loss_mask if any(m)))
    return [
        TrainShard(
            prompt_ids=prompt_ids[s], completion_ids=completion_ids[s], advantages=advantages[s],
            loss_mask=loss_mask[s], global_num_tokens=global_tokens, global_num_sequences=global_sequences,
            sampling_logprobs=sampling_logprobs[s] if sampling_logprobs is not None else None,
        )
        for s in shard_slices(len(completion_ids), num_learners)
    ]


# ---------------------------------------------------------------------------------------------
# Weight updates: learner -> object store -> rollout engines
# ---------------------------------------------------------------------------------------------
class WeightUpdate:
    """A policy version on its way to the rollout engines. ``kind`` names the sync strategy that made
    it and knows how to apply it (``grpo_ray.sync``)."""

    kind: str = ""
    version: int

    def num_bytes(self) -> int:
        raise NotImplementedError


class LoraAdapter(WeightUpdate):
    """One LoRA adapter version: PEFT state-dict tensors (on CPU) and the PEFT config dict.

    Pickled as numpy arrays: Ray moves those through its object store without copying them into the
    pickle (protocol-5 out-of-band buffers), while torch tensors are pickled as bytes."""

    kind = "lora"

    def __init__(self, version: int, tensors: dict[str, Any], peft_config: dict[str, Any]) -> None:
        self.version, self.tensors, self.peft_config = version, tensors, peft_config

    def num_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    @property
    def rank(self) -> int:
        return int(self.peft_config.get("r", 8))

    def __getstate__(self) -> dict[str, Any]:
        return {"version": self.version, "peft_config": self.peft_config, "arrays": tensors_to_numpy(self.tensors)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.version, self.peft_config = state["version"], state["peft_config"]
        self.tensors = tensors_from_numpy(state["arrays"])


class FullWeights(WeightUpdate):
    """Every weight of the policy, in buckets of at most ``bucket_bytes`` each.

    ``buckets`` holds object-store refs (put by learner rank 0), so the rollout worker fetches and
    applies one bucket at a time and never holds the whole model twice. Bucket contents are
    ``{name: tensor}`` dicts pickled as numpy (:func:`tensors_to_numpy`)."""

    kind = "full"

    def __init__(self, version: int, buckets: list[Any], total_bytes: int) -> None:
        self.version, self.buckets, self.total_bytes = version, buckets, total_bytes

    def num_bytes(self) -> int:
        return self.total_bytes


def tensors_to_numpy(tensors: dict[str, Any]) -> dict[str, tuple[Any, str]]:
    return {k: _to_numpy(v) for k, v in tensors.items()}


def tensors_from_numpy(arrays: dict[str, tuple[Any, str]]) -> dict[str, Any]:
    return {k: _from_numpy(*v) for k, v in arrays.items()}


def _to_numpy(tensor) -> tuple[Any, str]:
    import torch

    t = tensor.detach().to("cpu").contiguous()
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16: travel as its bits
        return t.view(torch.int16).numpy(), "bfloat16"
    return t.numpy(), str(t.dtype).removeprefix("torch.")


def _from_numpy(array, dtype: str):
    import torch

    # the object store hands out read-only buffers; the receiver owns a writable copy
    t = torch.from_numpy(array if array.flags.writeable else array.copy())
    return t.view(torch.bfloat16) if dtype == "bfloat16" else t
