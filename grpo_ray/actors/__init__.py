"""Ray actors, one role per file, each thin over the plain classes it wraps.

rollout.py  RolloutWorker  a vLLM (or transformers) engine with the policy's LoRA adapter
reward.py   RewardWorker   reward functions, run concurrently under a timeout (user code in killable processes)
judge.py    JudgeWorker    a causal LM that answers yes or no, for lm_judge rewards
learner.py  LearnerWorker  one data-parallel rank of the DeepSpeed policy learner
sync.py     adapter-only weight sync from learner rank 0 to every rollout worker
"""
