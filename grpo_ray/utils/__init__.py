"""Small shared helpers that import nothing heavy."""
