"""The wire types: a LoRA adapter crosses the Ray object store as numpy buffers (zero-copy) and comes
back exact; rollout shards join by the kind of each stat; a step splits over learners with global counts."""

from __future__ import annotations

import pickle

import pytest
import torch

from grpo_ray.wire import LoraAdapter, RolloutBatch, shard_slices, split_into_shards

pytestmark = pytest.mark.unit


def payload() -> LoraAdapter:
    g = torch.Generator().manual_seed(0)
    return LoraAdapter(
        version=7,
        tensors={
            "base_model.model.layers.0.q_proj.lora_A.weight": torch.randn(4, 16, generator=g),
            "base_model.model.layers.0.q_proj.lora_B.weight": torch.randn(16, 4, generator=g).to(torch.bfloat16),
            "base_model.model.layers.0.v_proj.lora_A.weight": torch.randn(4, 16, generator=g).to(torch.float16),
        },
        peft_config={"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]},
    )


def test_round_trip_keeps_values_dtypes_and_config() -> None:
    p = payload()
    back = pickle.loads(pickle.dumps(p, protocol=5))
    assert back.version == 7 and back.peft_config == p.peft_config
    assert back.tensors.keys() == p.tensors.keys()
    for k, t in p.tensors.items():
        assert back.tensors[k].dtype == t.dtype and torch.equal(back.tensors[k], t)


def test_tensors_travel_out_of_band() -> None:
    """With protocol 5 (what Ray uses) the tensor bytes leave the pickle as buffers, one per tensor:
    the object store then hands them to the reader without copying them through the pickle stream."""
    p = payload()
    buffers = []
    data = pickle.dumps(p, protocol=5, buffer_callback=buffers.append)
    assert len(buffers) == len(p.tensors)
    assert sum(b.raw().nbytes for b in buffers) == p.num_bytes()
    assert len(data) < 1024  # names and config only
    back = pickle.loads(data, buffers=buffers)
    assert all(torch.equal(back.tensors[k], t) for k, t in p.tensors.items())


def test_read_only_buffers_are_not_written_through() -> None:
    """The object store's buffers are read-only and shared by every reader on the node: the receiver
    gets its own tensors, and writing to them leaves the stored bytes as they were."""
    p = payload()
    buffers = []
    data = pickle.dumps(p, protocol=5, buffer_callback=buffers.append)
    stored = [bytes(b.raw()) for b in buffers]  # bytes: read-only buffers, as the object store's
    kept = [bytearray(s) for s in stored]  # copies (bytes(s) would be s itself)
    back = pickle.loads(data, buffers=[pickle.PickleBuffer(s) for s in stored])
    for t in back.tensors.values():
        t.add_(1)
    assert [bytearray(s) for s in stored] == kept
    k = "base_model.model.layers.0.q_proj.lora_A.weight"
    assert torch.allclose(back.tensors[k], p.tensors[k] + 1)


def _shard(stats, mask=None, version=3):
    return RolloutBatch(prompt_ids=[[1]], completion_ids=[[5, 6], [7]], completion_texts=["a", "b"],
                        sampling_logprobs=[[-0.1, -0.2], [-0.3]], finish_reasons=["stop", "length"], group_size=2,
                        policy_version=version, loss_mask=mask, stats=stats)


def test_concat_joins_stats_by_what_they_are() -> None:
    """Workers generate side by side: the slowest worker's seconds, the sum of the token counts."""
    joined = RolloutBatch.concat([_shard({"generate_s": 1.5, "completion_tokens": 3.0, "load_weights_s": 0.2}),
                                  _shard({"generate_s": 0.5, "completion_tokens": 4.0}, version=2)])
    assert joined.stats == {"generate_s": 1.5, "completion_tokens": 7.0, "load_weights_s": 0.2}
    assert joined.policy_version == 2 and joined.completion_ids == [[5, 6], [7], [5, 6], [7]]
    assert joined.loss_mask is None and joined.token_loss_mask() == [[1, 1], [1], [1, 1], [1]]


def test_concat_keeps_a_per_token_loss_mask() -> None:
    joined = RolloutBatch.concat([_shard({}, mask=[[1, 0], [1]]), _shard({})])
    assert joined.loss_mask == [[1, 0], [1], [1, 1], [1]]


def test_token_versions_follow_concat_and_group_selection_and_feed_the_inflight_metrics() -> None:
    """In-flight updates: one shard's second completion switched from version 3 to 4 mid-way; a shard
    that recorded no versions is all its policy_version's."""
    from grpo_ray.run.reporting import inflight_metrics

    switched = _shard({})
    switched.token_versions = [[3, 4], [4]]
    joined = RolloutBatch.concat([switched, _shard({}, version=2)])
    assert joined.token_versions == [[3, 4], [4], [2, 2], [2]] and joined.policy_version == 2
    assert joined.select_groups([1]).token_versions == [[2, 2], [2]]
    assert RolloutBatch.concat([_shard({}), _shard({})]).token_versions is None
    metrics = inflight_metrics(joined, learner_version=4)  # the update that turns version 4 into 5
    assert metrics == {"rollout/token_lag_mean": pytest.approx((1 + 0 + 0 + 2 + 2 + 2) / 6),
                       "rollout/updated_in_flight_frac": 0.25}
    assert inflight_metrics(_shard({}), 4) == {}


def test_split_into_shards_counts_tokens_in_the_loss_over_every_shard() -> None:
    masks = [[1, 1, 0], [0, 0], [1], [0]]  # row 1 and row 3 are out of the loss
    shards = split_into_shards([[1]] * 4, [[2, 3, 4], [5, 6], [7], [8]], [0.5, -0.5, 1.0, 0.0], masks, 2)
    assert [s.loss_mask for s in shards] == [masks[:2], masks[2:]]
    assert {(s.global_num_tokens, s.global_num_sequences) for s in shards} == {(3.0, 2)}


@pytest.mark.parametrize(
    "n, parts, unit, sizes",
    [(16, 2, 4, [8, 8]), (12, 4, 2, [4, 4, 2, 2]), (6, 1, 2, [6]), (4, 3, 2, [2, 2]), (15, 2, 3, [9, 6]),
     (5, 2, 1, [3, 2]), (2, 4, 1, [1, 1])],
)
def test_shard_slices_are_contiguous_whole_units_and_never_empty(n, parts, unit, sizes) -> None:
    slices = shard_slices(n, parts, unit)
    assert [s.stop - s.start for s in slices] == sizes
    assert slices[0].start == 0 and slices[-1].stop == n
    assert all(a.stop == b.start for a, b in zip(slices, slices[1:]))
    assert all(s.start % unit == 0 for s in slices)


def test_shard_slices_rejects_partial_units() -> None:
    with pytest.raises(ValueError, match="not whole units of 4"):
        shard_slices(10, 2, 4)


def test_selected_groups_keep_every_per_row_field_and_conversations() -> None:
    batch = RolloutBatch(prompt_ids=[[1], [2], [3]], completion_ids=[[i] for i in range(6)],
                         completion_texts=[str(i) for i in range(6)], sampling_logprobs=[[-0.1]] * 6,
                         finish_reasons=["stop", "length"] * 3, group_size=2, policy_version=3,
                         loss_mask=[[1]] * 5 + [[0]],
                         completion_messages=[[{"role": "assistant", "content": f"<p>{i}"}] for i in range(6)])
    picked = batch.select_groups([2, 0])
    assert picked.prompt_ids == [[3], [1]] and picked.completion_ids == [[4], [5], [0], [1]]
    assert picked.loss_mask == [[1], [0], [1], [1]] and picked.finish_reasons == ["stop", "length"] * 2
    assert picked.final_texts() == ["<p>4", "<p>5", "<p>0", "<p>1"] and picked.policy_version == 3
    plain = RolloutBatch.concat([batch.select_groups([0])])
    assert plain.conversations()[1] == [{"role": "assistant", "content": "<p>1"}]
