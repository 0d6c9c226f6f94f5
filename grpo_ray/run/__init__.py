"""The pieces of a training run that the driver's loop (``grpo_ray.driver``) calls, each on its own:

data.py       TrainingData: the training rows, the prompt sampler (the data cursor) and the held-out rows
batch.py      rewards -> advantages and the per-token loss mask of a step (calls grpo_ray.algo)
pipeline.py   generations in flight ahead of the update (async training, bounded staleness)
reporting.py  a step's rollout metrics and its table of sample completions
"""
