"""Held-out evaluation: a table of reward means (hard and soft correctness, integer, soft and strict
format), computed from greedy completions."""
