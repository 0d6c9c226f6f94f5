"""Model construction and loading helpers (transformers/PEFT side; no Ray here)."""
