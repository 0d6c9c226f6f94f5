"""Held-out evaluation: the seeds' table of reward means, computed from greedy completions."""
