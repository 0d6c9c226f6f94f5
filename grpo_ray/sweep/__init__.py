"""Ray Tune sweeps of GRPO runs: the sweep spec (no Ray), its Tune objects, the trial, the results."""
