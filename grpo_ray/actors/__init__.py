"""Ray actors, one role per file, each thin over the plain classes it wraps.

rollout_worker.py  RolloutWorker  an engine (vLLM or transformers) and a rollout kind, under the synced weights
reward_worker.py   RewardWorker   reward functions, run concurrently under a timeout (user code in killable processes)
judge_worker.py    JudgeWorker    a causal LM that answers yes or no, for lm_judge rewards
learner_worker.py  LearnerWorker  one data-parallel rank of the DeepSpeed policy learner
children.py        the engine processes a killed rollout actor leaves behind, reaped by its restart

The driver's side of each role (what to send, what to do when an actor dies) is in ``grpo_ray.run``.
"""
