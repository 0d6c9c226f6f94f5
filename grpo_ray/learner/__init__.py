"""The learner side: a DeepSpeed engine over base model + PEFT LoRA, with no Ray in it.

``grpo_ray.actors.learner_worker`` wraps :class:`PolicyLearner` as a Ray actor; tests use it directly.
"""
