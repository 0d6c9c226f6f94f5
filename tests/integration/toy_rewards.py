"""A dense toy reward for tests on a randomly initialised model: the share of even token ids.

A random model spreads its probability almost evenly over the vocabulary, so about half of each
completion's tokens have even ids and the share differs between the completions of every group:
GRPO has a signal from the first step, and the probability mass on even ids is what it should raise.
"""


def even_token_share(prompts, completions, completion_ids, **kwargs):
    return [sum(1 for t in ids if t % 2 == 0) / max(len(ids), 1) for ids in completion_ids]


def odd_token_share(prompts, completions, completion_ids, **kwargs):
    return [1.0 - r for r in even_token_share(prompts, completions, completion_ids)]


def slow_even_token_share(prompts, completions, completion_ids, **kwargs):
    """even_token_share after a 3-second wait: a reward call that is still running when a test kills its actor."""
    import time

    time.sleep(3.0)
    return even_token_share(prompts, completions, completion_ids)
