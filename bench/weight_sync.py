"""Full-weight sync: vLLM's weight transfer and the broadcast strategy against the object store, side by
side on one learner and one rollout worker.

SmolLM2-135M-Instruct fully fine-tuned (``model.lora.enabled=false``: 538 MB of float32 weights on CPU),
one DeepSpeed learner and one vLLM rollout worker on a local Ray cluster. Each round hands a new version
to the worker once through each strategy (the order rotates every round, since this machine's speed
drifts): ``full`` puts the buckets in Ray's object store and the worker reads them back; ``broadcast``
sends them from learner rank 0 over a gloo group into the worker, which hands them to vLLM's loaders;
``vllm_transfer`` sends the parameters themselves from rank 0 into vLLM's weight-transfer engine (here
over grpo_ray's gloo backend; NCCL on GPUs). All end with the same weights in the engine (the tests
check that); only the way differs. Prints, per strategy, the
median hand-off seconds (the learner starts sending until the engine holds the version), what went
through the object store, and the bytes each side copies on the host, then the same figures computed
for Llama-3.1-8B in bf16 (16 GB) for one rollout worker.

    .venv/bin/python bench/weight_sync.py [--rounds 5] [--model builtin:smollm2-135m-instruct]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

# host bytes copied per version, in units of the model's size, counted from the code:
#   full:      rank 0 copies each parameter to the host (full_state), pickles the bucket into the object
#              store (one copy into shared memory); the worker maps the bucket from its node's store (no
#              copy on the same node; one transfer more per other node) and vLLM copies it into its weights
#   broadcast: rank 0 copies each parameter to the host and packs the bucket (one copy); the worker
#              receives into one buffer per bucket (the transfer itself) and vLLM copies it in
#   vllm_transfer on CPU: rank 0 packs the parameters themselves into a bucket (one copy); the engine
#              receives into one buffer per bucket and vLLM's layerwise reload copies it in. On GPUs the
#              same copies are device copies (NCCL from GPU to GPU): none on either host.
COPIES = {"full": {"learner": 2, "object store": 1, "rollout": 1},
          "broadcast": {"learner": 2, "object store": 0, "rollout": 2},
          "vllm_transfer": {"learner": 1, "object store": 0, "rollout": 2}}
COPIES_ON_GPUS = {"full": COPIES["full"], "broadcast": None,  # broadcast does not reach engines on GPUs
                  "vllm_transfer": {"learner": 0, "object store": 0, "rollout": 0}}
STRATEGIES = tuple(COPIES)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--model", default="builtin:smollm2-135m-instruct")
    args = ap.parse_args()

    import ray

    from grpo_ray.config import load_config
    from grpo_ray.run.learner_group import LearnerGroup, WeightHandoff
    from grpo_ray.run.trainer import GRPOTrainer
    from grpo_ray.sync import create_weight_sync

    out = tempfile.mkdtemp(prefix="grpo_sync_bench_")
    base = ["model.lora.enabled=false", f"model.name_or_path={args.model}", "model.dtype=float32",
            "rollout.engine=vllm", "rollout.num_cpus_per_worker=1", "learner.num_cpus_per_learner=1",
            "eval.enabled=false", "trainer.sinks=[jsonl]", f"trainer.output_dir={out}"]
    cfgs = {name: load_config(None, [*base, f"sync.strategy={name}"]) for name in STRATEGIES}
    trainer = GRPOTrainer(cfgs["vllm_transfer"]).setup()  # its engine can join vLLM's weight transfer
    groups = {name: LearnerGroup(cfg, trainer.workers) for name, cfg in cfgs.items()}
    learner, worker = trainer.workers.learners[0], trainer.workers.rollouts[0]
    size = ray.get(learner.__ray_call__.remote(
        lambda self: sum(p.numel() * p.element_size() for p in self.learner.peft_model.parameters())))

    def use(name: str) -> LearnerGroup:
        ray.get(learner.__ray_call__.remote(lambda self: setattr(self, "sync", create_weight_sync(name))))
        groups[name].connect()
        return groups[name]

    seconds = {name: [] for name in cfgs}
    stored = {}
    version = 0
    for r in range(args.rounds + 1):  # round 0 warms both paths up
        for name in STRATEGIES[r % 3:] + STRATEGIES[:r % 3]:
            group = use(name)
            version += 1
            start = time.perf_counter()
            handoff = WeightHandoff(group.learners, trainer.workers.rollouts, version, lineage="bench", strategy=name)
            handoff.wait()
            elapsed = time.perf_counter() - start
            update = ray.get(handoff.handle.ref)
            stored[name] = update.total_bytes if name == "full" else 0
            assert ray.get(worker.version.remote()) == version
            if r:
                seconds[name].append(elapsed)
    trainer.shutdown()

    print(f"\n{args.model}, full fine-tuning: {size / 2**20:.0f} MB of weights; {args.rounds} rounds, medians")
    print("| strategy | hand-off s | through the object store | host copies (learner / rollout) |")
    print("|---|---:|---:|---|")
    for name in cfgs:
        c = COPIES[name]
        print(f"| {name} | {statistics.median(seconds[name]):.2f} | {stored[name] / 2**20:.0f} MB | "
              f"{c['learner'] + c['object store']} x / {c['rollout']} x the model |")
    for name in ("broadcast", "vllm_transfer"):
        ratio = statistics.median(seconds[name]) / statistics.median(seconds["full"])
        print(f"{name} / full hand-off time = {ratio:.3f}")
    gb = 16e9
    print(f"\nLlama-3.1-8B in bf16 ({gb / 1e9:.0f} GB) on GPUs, one rollout worker, per version (GB copied on the hosts):")
    for name, c in COPIES_ON_GPUS.items():
        if c is None:
            print(f"- {name}: does not reach engines on GPUs")
            continue
        print(f"- {name}: {c['object store'] * gb / 1e9:.0f} GB into the object store, learner's host "
              f"{(c['learner'] + c['object store']) * gb / 1e9:.0f} GB, rollout's host {c['rollout'] * gb / 1e9:.0f} GB")


if __name__ == "__main__":
    main()
