"""Source text of user tool files that several tests write to disk and load as a user would."""

COUNTER_ENV = '''
class Counter:
    """Counts what it is told; each episode has its own count."""

    def reset(self, start: int = 0, **row):
        self.count = int(start)
        return f"The count starts at {self.count}."

    def add(self, n: int) -> str:
        """Add to the count.

        Args:
            n: How much to add.
        """
        self.count += n
        return str(self.count)
'''
