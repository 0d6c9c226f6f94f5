"""The trainer loop and its collaborators, each tested on its own with fake workers (tests/unit/run):

trainer.py         GRPOTrainer: the loop; each step reads as its phases
rollout_client.py  RolloutClient: prompts drawn and turned into trajectories, now or ahead (async)
reward_client.py   RewardClient: the reward inputs (conversations), split over the reward workers
learner_group.py   LearnerGroup: update, weight hand-off, snapshots, recovery of a dead rank
shards.py          PendingShards (a dead actor's shard sent again), the liveness probe, Calls
snapshots.py       the learners' state after every step, kept off the learners
checkpoints.py     atomic checkpoints and the trainer's own state (cursor, in-flight generations)
evaluator.py       held-out evaluation during training
pipeline.py        generations in flight ahead of the update (async, bounded staleness)
dynamic.py         dynamic sampling: more prompts until a step has B informative groups
batch.py           rewards -> advantages and the per-token loss mask (calls grpo_ray.algo)
reporting.py       a step's rollout metrics and its table of sample trajectories
metrics.py         MetricLogger (the sinks) and PhaseTimer
report.py          report.png
"""
