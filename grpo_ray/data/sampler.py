"""Which prompts each step trains on: a seeded permutation per epoch and a cursor.

The state is two integers, saved in every checkpoint, so a resumed run draws exactly the prompts
the uninterrupted run would have.
"""

from __future__ import annotations

import numpy as np


class PromptSampler:
    def __init__(self, num_rows: int, seed: int) -> None:
        if num_rows < 1:
            raise ValueError("the training split has no rows")
        self.num_rows, self.seed = num_rows, seed
        self.epoch, self.cursor = 0, 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_rows)

    def next_index(self) -> int:
        if self.cursor >= self.num_rows:
            self.epoch, self.cursor = self.epoch + 1, 0
            self._order = self._permutation(self.epoch)
        index = int(self._order[self.cursor])
        self.cursor += 1
        return index

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])
        self._order = self._permutation(self.epoch)
