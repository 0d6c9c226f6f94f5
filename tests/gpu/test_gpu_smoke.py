"""The GPU smoke test: what a GPU user's first run goes through, on one CUDA device.

Run on a GPU machine by ``bash bench/gpu_check.sh`` (it installs the carried wheels first); skipped,
saying why, where CUDA is absent. ``GRPO_RAY_GPU_TESTS_ON_CPU=1`` runs the same code on the CPU (gloo,
float32) to check the tests themselves on a machine without a GPU.

Covered: the transformers rollout engine on the device; DeepSpeed learners in bf16 under ZeRO-2 and
ZeRO-3 (NCCL); an NF4 base with bitsandbytes, sampler and learner on the same 4-bit numbers; the
layer-by-layer merge on the device, with its time for Llama-3.1-8B-sized layers; a killed actor's
child process freeing its GPU memory for the restarted actor; a short run that checkpoints and resumes;
the learner's chunked logprobs on the device against the whole logits, with each one's peak memory;
a colocated run (engine and learner on the one GPU, the engine asleep during updates). vLLM's CUDA
wheel (~400 MB) cannot be carried to the lent machine, so vLLM itself (its sleep mode included) is
covered only where it is installed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.integration.helpers import engine_and_learner_logprobs, engine_logprobs

pytestmark = pytest.mark.gpu

ON_CPU = os.environ.get("GRPO_RAY_GPU_TESTS_ON_CPU") == "1"
if not torch.cuda.is_available() and not ON_CPU:
    pytest.skip("no CUDA device (GRPO_RAY_GPU_TESTS_ON_CPU=1 runs these on the CPU)", allow_module_level=True)

DEVICE = "cpu" if ON_CPU else "cuda"
DTYPE = "float32" if ON_CPU else "bfloat16"
ray = pytest.importorskip("ray")


def report(name: str, **values) -> None:
    """One line the smoke script's log keeps: what ran and what it measured."""
    print(f"GPU-CHECK {name} " + json.dumps(values, default=str), file=sys.stderr, flush=True)


@pytest.fixture(scope="module", autouse=True)
def cluster():
    from grpo_ray.cluster import actor_env

    ray.init(num_cpus=8, num_gpus=0 if ON_CPU else 1, include_dashboard=False, log_to_driver=True,
             runtime_env={"env_vars": actor_env()}, _system_config={"process_group_cleanup_enabled": True})
    yield
    ray.shutdown()


def base_config(out, *overrides):
    from grpo_ray.config import load_config

    gpus = "0" if ON_CPU else "0.5"
    return load_config(None, [
        "model.name_or_path=builtin:arithmetic-base", f"model.dtype={DTYPE}", "model.lora.r=16",
        "model.lora.target_modules=all-linear", "rollout.engine=hf", "rollout.group_size=4",
        "rollout.max_completion_tokens=32", f"rollout.num_gpus_per_worker={gpus}", f"learner.num_gpus_per_learner={gpus}",
        "trainer.prompts_per_step=4", "learner.micro_batch_size=8", "learner.lr=5e-4", "algo.beta=0.04",
        "trainer.steps=2", "trainer.save_every=1", "trainer.sinks=[jsonl]", "eval.enabled=false",
        f"trainer.output_dir={out}", *overrides,
    ])


def test_transformers_engine_on_the_device_matches_the_learner(tmp_path) -> None:
    from grpo_ray.run.trainer import GRPOTrainer

    trainer = GRPOTrainer(base_config(tmp_path)).setup()
    try:
        plan = ray.get(trainer.workers.rollouts[0].launch_plan.remote())
        learner_plan = ray.get(trainer.workers.learners[0].launch_plan.remote())
        assert plan["device"] == DEVICE and learner_plan["backend"] == ("gloo" if ON_CPU else "nccl")
        start = time.perf_counter()
        metrics, _ = trainer.train_step()
        (engine,), (learner,) = engine_and_learner_logprobs(
            trainer.workers, trainer.tokenizer, ["<reasoning>\n12 + 30 = 42\n</reasoning>\n<answer>\n42\n</answer>"])
        gap = max(abs(a - b) for a, b in zip(engine, learner))
        report("hf-engine", step_s=round(time.perf_counter() - start, 3), logprob_gap=gap, lag=metrics["policy_version_lag"],
               tokens_per_s=metrics["rollout/engine_tokens_per_s"], device=plan["device"], gpus=plan["gpu_ids"])
        assert gap < (2e-3 if ON_CPU else 0.1)  # bf16 kernels differ between generate and the training forward
    finally:
        trainer.shutdown()


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_bf16_under_zero(tmp_path, stage) -> None:
    from grpo_ray.cluster import Workers
    from grpo_ray.wire import split_into_shards

    cfg = base_config(tmp_path, f"learner.zero_stage={stage}")
    workers = Workers()
    try:
        workers.start_learners(cfg)
        learner = workers.learners[0]
        plan = ray.get(learner.launch_plan.remote())
        assert plan["deepspeed"]["bf16"] == {"enabled": not ON_CPU}
        g = torch.Generator().manual_seed(0)
        prompts = [[1, 5, 9, 3]] * 16
        completions = [torch.randint(3, 400, (12,), generator=g).tolist() for _ in range(16)]
        advantages = torch.randn(16, generator=g).tolist()
        before = ray.get(learner.send_weights.remote(0)).tensors
        shard = split_into_shards(prompts, completions, advantages, [[1] * 12] * 16, 1)[0]
        start = time.perf_counter()
        metrics = ray.get(learner.train_step.remote(shard))
        after = ray.get(learner.send_weights.remote(1)).tensors
        moved = max(float((after[k].float() - before[k].float()).abs().max()) for k in after)
        report(f"deepspeed-zero{stage}", backend=plan["backend"], bf16=plan["deepspeed"]["bf16"], loss=metrics["loss"],
               grad_norm=metrics["grad_norm"], seconds=round(time.perf_counter() - start, 3), moved=moved)
        assert torch.isfinite(torch.tensor(metrics["loss"])) and moved > 0
    finally:
        workers.shutdown()


def test_nf4_sampler_and_learner_use_the_same_weights(tmp_path) -> None:
    pytest.importorskip("bitsandbytes")
    from transformers import AutoModelForCausalLM

    from grpo_ray.models.nf4 import nf4_config, nf4_rounded_checkpoint
    from grpo_ray.models.paths import resolve_model_path

    path = resolve_model_path("builtin:arithmetic-base")
    dtype = getattr(torch, DTYPE)
    start = time.perf_counter()
    rounded = nf4_rounded_checkpoint(path, dtype=DTYPE, device=DEVICE)
    seconds = time.perf_counter() - start
    served = AutoModelForCausalLM.from_pretrained(str(rounded), dtype=dtype).to(DEVICE)
    quantized = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, quantization_config=nf4_config(dtype),
                                                     device_map={"": DEVICE})
    original = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(DEVICE)
    quantized.model.embed_tokens.weight.requires_grad_(True)  # the training forward: dequantize, then matmul
    ids = torch.randint(3, 400, (2, 24), generator=torch.Generator().manual_seed(1)).to(DEVICE)
    lq = torch.log_softmax(quantized(ids).logits.float(), -1)
    with torch.no_grad():
        lr, lo = (torch.log_softmax(m(ids).logits.float(), -1) for m in (served, original))
    rounded_gap, original_gap = float((lr - lq).abs().max()), float((lo - lq).abs().max())
    report("nf4", rounded_vs_nf4=rounded_gap, original_vs_nf4=original_gap, rounding_seconds=round(seconds, 2),
           gpu_memory_gb=round(torch.cuda.max_memory_allocated() / 2**30, 2) if not ON_CPU else None)
    assert rounded_gap < original_gap / 4


def test_nf4_learner_trains_in_bf16_with_deepspeed(tmp_path) -> None:
    pytest.importorskip("bitsandbytes")
    from grpo_ray.run.trainer import GRPOTrainer

    trainer = GRPOTrainer(base_config(tmp_path, "model.load_in_4bit=true", "learner.zero_stage=2", "trainer.steps=1")).setup()
    try:
        plan = ray.get(trainer.workers.learners[0].launch_plan.remote())
        metrics, _ = trainer.train_step()
        report("nf4-learner", bf16=plan["deepspeed"]["bf16"], loss=metrics["loss"], grad_norm=metrics["grad_norm"])
        assert plan["deepspeed"]["bf16"] == {"enabled": not ON_CPU} and metrics["grad_norm"] > 0
    finally:
        trainer.shutdown()


def test_layer_by_layer_merge_on_the_device(tmp_path) -> None:
    """Four Llama-3.1-8B decoder layers' worth of targeted weights (hidden 4096, 8 of 32 KV heads, MLP
    14336), rank 64, merged from safetensors on disk onto the device: equal to the CPU merge, and timed."""
    from safetensors.torch import save_file

    from grpo_ray.rollout.lora_merge import merged_weights, stream_merged_weights

    layers = 1 if ON_CPU else 4
    shapes = {"q_proj": (4096, 4096), "k_proj": (1024, 4096), "v_proj": (1024, 4096), "o_proj": (4096, 4096),
              "gate_proj": (14336, 4096), "up_proj": (14336, 4096), "down_proj": (4096, 14336)}
    g = torch.Generator().manual_seed(0)
    base, adapter = {}, {}
    for i in range(layers):
        for name, (out, inp) in shapes.items():
            kind = "self_attn" if name[0] in "qkvo" else "mlp"
            module = f"model.layers.{i}.{kind}.{name}"
            base[f"{module}.weight"] = torch.randn(out, inp, generator=g).to(torch.bfloat16)
            adapter[f"base_model.model.{module}.lora_A.weight"] = torch.randn(64, inp, generator=g) * 0.01
            adapter[f"base_model.model.{module}.lora_B.weight"] = torch.randn(out, 64, generator=g) * 0.01
    save_file(base, str(tmp_path / "model.safetensors"))
    config = {"r": 64, "lora_alpha": 64}
    if not ON_CPU:
        torch.cuda.synchronize()
    start = time.perf_counter()
    on_device = {k: v for k, v in stream_merged_weights(str(tmp_path), adapter, config, device=DEVICE, dtype=torch.bfloat16)}
    if not ON_CPU:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    reference = dict(merged_weights(base, adapter, config, dtype=torch.bfloat16))
    worst = max(float((on_device[k].cpu().float() - reference[k].float()).abs().max()) for k in reference)
    params = sum(t.numel() for t in base.values())
    report("device-merge", layers=layers, params=params, seconds=round(seconds, 3),
           seconds_for_32_layers=round(seconds * 32 / layers, 2), worst_abs_diff=worst)
    assert worst <= 0.0625  # one bf16 ulp at these magnitudes: the same float32 sum, rounded once


def test_a_killed_actors_child_frees_its_gpu_memory(tmp_path) -> None:
    """A child that left the actor's process group holds device memory; SIGKILL the actor, and its next
    incarnation kills the child before starting its engine: the memory is back."""
    from grpo_ray.run.shards import wait_until_alive
    from grpo_ray.actors.rollout_worker import RolloutWorker
    from grpo_ray.models.paths import resolve_model_path
    from grpo_ray.rollout.engines.base import engine_spec

    cfg = base_config(tmp_path)
    worker = RolloutWorker.options(num_gpus=0 if ON_CPU else 0.5, max_restarts=1).remote(
        engine_spec(cfg, resolve_model_path(cfg.model.name_or_path)))
    hog = "import torch, time; x = torch.empty(2 * 2**30, dtype=torch.uint8, device='cuda'); time.sleep(600)"
    if ON_CPU:
        hog = "import time; x = bytearray(2 * 2**30); time.sleep(600)"

    def spawn(actor):
        child = subprocess.Popen([sys.executable, "-c", hog], start_new_session=True)
        time.sleep(8)  # CUDA context + allocation
        actor.children.record()
        return child.pid

    try:
        child = ray.get(worker.__ray_call__.remote(spawn))
        used_before = _device_used_gb()
        os.kill(ray.get(worker.__ray_call__.remote(lambda a: os.getpid())), signal.SIGKILL)
        time.sleep(1)
        assert wait_until_alive(worker, 120)
        plan = ray.get(worker.launch_plan.remote())
        time.sleep(2)
        used_after = _device_used_gb()
        report("kill-restart", reaped=plan["reaped"], child=child, used_gb_before=used_before, used_gb_after=used_after)
        assert child in plan["reaped"]
        if not ON_CPU:
            assert used_after < used_before - 1.5
    finally:
        ray.kill(worker, no_restart=True)


def _device_used_gb():
    if ON_CPU:
        return None
    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True).stdout.split()
    return round(float(out[0]) / 1024, 2) if out else None


def test_a_short_run_checkpoints_and_resumes(tmp_path) -> None:
    from grpo_ray.run.trainer import GRPOTrainer

    first = GRPOTrainer(base_config(tmp_path)).setup()
    try:
        history = first.train()
    finally:
        first.shutdown()
    resumed = GRPOTrainer(base_config(tmp_path, "trainer.steps=3", f"trainer.resume={tmp_path}")).setup()
    try:
        more = resumed.train()
    finally:
        resumed.shutdown()
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    report("resume", steps=steps, reward=[round(h["reward"], 3) for h in history + more])
    assert steps == [1, 2, 3]


def test_chunked_logprobs_on_the_device() -> None:
    """The learner's chunked logprobs on the device in the run's dtype: the same logprobs and LM-head
    gradient as the whole logits, and (on CUDA) the peak memory of each at a long completion."""
    from transformers import AutoModelForCausalLM

    from grpo_ray.learner.forward import completion_logprobs
    from grpo_ray.learner.padding import pad_rows
    from grpo_ray.models.paths import resolve_model_path

    model = AutoModelForCausalLM.from_pretrained(resolve_model_path("builtin:arithmetic-base"),
                                                 dtype=getattr(torch, DTYPE)).to(DEVICE)
    g = torch.Generator().manual_seed(0)
    width = 2048
    vocab = model.config.vocab_size
    batch = pad_rows([torch.randint(3, vocab, (16,), generator=g).tolist()] * 4,
                     [torch.randint(3, vocab, (width,), generator=g).tolist() for _ in range(4)], 0).to(DEVICE)
    out = {}
    for chunk in (0, 256):
        model.zero_grad()
        if DEVICE == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        lp, _ = completion_logprobs(model, model, batch, temperature=0.9, chunk_size=chunk, with_entropy=True,
                                    share_prefix=False)
        lp.sum().backward()
        peak = torch.cuda.max_memory_allocated() - base if DEVICE == "cuda" else None
        out[chunk] = (lp.detach().float(), model.lm_head.weight.grad.detach().float().clone(), peak)
    (whole, grad_whole, peak_whole), (chunked, grad_chunked, peak_chunked) = out[0], out[256]
    torch.testing.assert_close(chunked, whole, rtol=0, atol=0.05 if DTYPE == "bfloat16" else 2e-5)
    assert float((grad_chunked - grad_whole).abs().max()) <= 0.05 * float(grad_whole.abs().max())
    report("chunked_logprobs", T=width, rows=4, vocab=vocab, peak_whole_mib=peak_whole and peak_whole / 2**20,
           peak_chunked_mib=peak_chunked and peak_chunked / 2**20)


def test_a_colocated_run_frees_the_engines_gpu_memory_for_each_update(tmp_path) -> None:
    """trainer.colocate on the one GPU: the transformers engine and the learner share it; before each
    update the engine sleeps (LoRA: level 1, its weights moved to host memory), and the sync after the
    update brings them back and writes the adapter, so the engine ends holding the learner's policy."""
    from grpo_ray.run.trainer import GRPOTrainer

    cfg = base_config(tmp_path, "trainer.colocate=true", "rollout.num_gpus_per_worker=null",
                      "learner.num_gpus_per_learner=null", "trainer.save_every=0")
    trainer = GRPOTrainer(cfg).setup()
    try:
        rollout = trainer.workers.rollouts[0]

        def engine_memory(actor, sleep):
            if sleep:
                actor.sleep()
            return torch.cuda.memory_allocated() if torch.cuda.is_available() else 0

        awake = ray.get(rollout.__ray_call__.remote(engine_memory, False))
        history = trainer.train()
        asleep = ray.get(rollout.__ray_call__.remote(engine_memory, True))  # as during an update
        trainer.learners.publish(trainer.step)  # the sync wakes it
        tok = trainer.tokenizer
        prompt = list(tok.apply_chat_template([{"role": "user", "content": "What is 12 + 30?"}], add_generation_prompt=True,
                                              return_dict=True)["input_ids"])
        completions = [tok.encode("<answer>\n42\n</answer>")]
        in_engine = engine_logprobs(rollout, [prompt], completions)
        in_learner = ray.get(trainer.workers.learners[0].logprobs.remote([prompt], completions))
        plan = ray.get(rollout.launch_plan.remote())
        learner_plan = ray.get(trainer.workers.learners[0].launch_plan.remote())
        report("colocate-hf", gpu=plan["gpu_ids"], learner_gpu=learner_plan["gpu_ids"], engine_mib_awake=awake / 2**20,
               engine_mib_asleep=asleep / 2**20, sleeps=ray.get(rollout.info.remote())["sleeps"],
               steps=len(history), max_abs_logprob_diff=max(abs(a - b) for a, b in zip(in_engine[0], in_learner[0])))
        assert plan["gpu_ids"] == learner_plan["gpu_ids"]
        if not ON_CPU:
            assert asleep < awake / 2
        assert in_engine[0] == pytest.approx(in_learner[0], abs=0.05 if DTYPE == "bfloat16" else 1e-4)
    finally:
        trainer.shutdown()


def test_vllm_wakes_before_a_sync_and_samples_the_new_weights(tmp_path) -> None:
    """vLLM's own sleep mode (CUDA builds only): an adapter merged after sleep(1) is what the engine then
    samples from, not the copy it offloaded when it went to sleep (the stale-weights bug of TRL#5312 and
    verl#7495), and sleeping frees most of its GPU memory."""
    from grpo_ray.cluster import cuda_vllm_installed

    if ON_CPU or not cuda_vllm_installed():
        pytest.skip("needs the CUDA vLLM wheel on a GPU (it cannot be carried to the lent machine)")
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    from grpo_ray.models.adapter_io import peft_config_dict
    from grpo_ray.models.paths import resolve_model_path
    from grpo_ray.rollout.engines.base import EngineSpec
    from grpo_ray.rollout.engines.vllm_engine import VLLMEngine
    from grpo_ray.wire import LoraAdapter

    path = resolve_model_path("builtin:arithmetic-base")
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(path),
                                LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
    lora = peft_config_dict(peft_model.peft_config["default"])  # target modules resolved, as the learner sends it
    engine = VLLMEngine(EngineSpec("vllm", path, dtype="bfloat16", lora=lora, max_lora_rank=8,
                                   gpu_memory_utilization=0.3, sleep_level=1, device="cuda"))

    def adapter(seed: int, version: int) -> LoraAdapter:
        g = torch.Generator().manual_seed(seed)
        return LoraAdapter(version, {k: torch.randn(v.shape, generator=g) * 0.05
                                     for k, v in get_peft_model_state_dict(peft_model).items()}, lora)

    def logprobs() -> list[float]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        ids = list(range(5, 40))
        out = engine.llm.generate([TokensPrompt(prompt_token_ids=ids)], SamplingParams(max_tokens=1, prompt_logprobs=0),
                                  use_tqdm=False)[0]
        return [d[t].logprob for t, d in zip(ids[1:], out.prompt_logprobs[1:])]

    a, b = adapter(1, 1), adapter(2, 2)
    engine.apply_lora(a)
    with_a = logprobs()
    engine.apply_lora(b)
    with_b = logprobs()
    free_awake = torch.cuda.mem_get_info()[0]
    engine.sleep(1)
    free_asleep = torch.cuda.mem_get_info()[0]
    engine.apply_lora(a)  # wakes the weights, then writes a
    after = logprobs()
    report("colocate-vllm", freed_mib=(free_asleep - free_awake) / 2**20,
           diff_to_a=max(abs(x - y) for x, y in zip(after, with_a)), diff_to_b=max(abs(x - y) for x, y in zip(after, with_b)))
    assert after == pytest.approx(with_a, abs=0.02) and after != pytest.approx(with_b, abs=0.02)
    assert free_asleep > free_awake
    engine.close()


def test_the_transfers_sending_side_stays_on_the_device_under_zero3(tmp_path) -> None:
    """What learner rank 0 hands vLLM's NCCL weight transfer (sync.strategy=vllm_transfer): every weight
    gathered by ZeRO-3 and kept on the device (no host copy), equal to the host copies the object store's
    strategy makes, and in the order and shapes of the plan the engines size their buffers from."""
    from grpo_ray.cluster import Workers

    cfg = base_config(tmp_path, "learner.zero_stage=3", "model.lora.enabled=false", "sync.strategy=vllm_transfer",
                      "rollout.engine=vllm")
    workers = Workers()
    try:
        workers.start_learners(cfg)

        def sending_side(self):
            learner = self.learner
            plan = self.sync.plan(learner)
            on_device = [(n, t.device.type, t.float().cpu()) for n, t in learner.full_state(on_device=True)]
            host = dict(learner.full_state())
            return plan.backend, [p[0] for p in plan.params], [
                (n, dev, torch.equal(t, host[n].float()), list(t.shape) == list(plan_shape))
                for (n, dev, t), (_, _, plan_shape) in zip(on_device, plan.params)]

        backend, names, rows = ray.get(workers.learners[0].__ray_call__.remote(sending_side))
        report("vllm-transfer-send-side", backend=backend, weights=len(rows), devices=sorted({r[1] for r in rows}))
        assert backend == ("grpo_ray_gloo" if ON_CPU else "nccl")
        assert [r[0] for r in rows] == names and all(r[2] and r[3] for r in rows)
        assert {r[1] for r in rows} == {DEVICE}
    finally:
        workers.shutdown()


def test_full_weights_through_vllms_nccl_weight_transfer(tmp_path) -> None:
    """sync.strategy=vllm_transfer end to end on GPUs: the learner on one GPU, the vLLM engine on another,
    every version broadcast over NCCL from the learner's weights into the engine's; the engine ends scoring
    tokens as the learner does. NCCL refuses two ranks on one GPU, so this needs two."""
    from grpo_ray.cluster import cuda_vllm_installed

    if ON_CPU or not cuda_vllm_installed() or torch.cuda.device_count() < 2:
        pytest.skip("needs the CUDA vLLM wheel and two GPUs (NCCL puts the learner and the engine on different GPUs)")
    from grpo_ray.run.trainer import GRPOTrainer

    ray.shutdown()  # this test's cluster has two GPUs
    ray.init(num_cpus=8, num_gpus=2, include_dashboard=False)
    cfg = base_config(tmp_path, "model.lora.enabled=false", "sync.strategy=vllm_transfer", "rollout.engine=vllm",
                      "rollout.num_gpus_per_worker=1", "learner.num_gpus_per_learner=1", "rollout.gpu_memory_utilization=0.3",
                      "learner.lr=1e-4", "trainer.steps=3", "trainer.save_every=0")
    trainer = GRPOTrainer(cfg).setup()
    try:
        start = time.perf_counter()
        history = trainer.train()
        (engine,), (learner,) = engine_and_learner_logprobs(trainer.workers, trainer.tokenizer, ["<answer>\n42\n</answer>"])
        info = ray.get(trainer.workers.rollouts[0].info.remote())
        report("vllm-transfer-nccl", seconds=round(time.perf_counter() - start, 2), load_path=info.get("load_path"),
               complete=[h["sync/broadcast_complete"] for h in history],
               load_s=[h["sync/load_seconds_max"] for h in history], gap=max(abs(a - b) for a, b in zip(engine, learner)))
        assert info["load_path"] == "transfer" and all(h["sync/broadcast_complete"] == 1.0 for h in history)
        assert engine == pytest.approx(learner, abs=0.1)  # bf16 kernels differ between vLLM and the training forward
    finally:
        trainer.shutdown()
