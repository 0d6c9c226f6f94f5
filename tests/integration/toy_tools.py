"""A short tool for tests on the built-in model, whose 512-token context leaves little room for the
tools' description."""


def double(x: int) -> int:
    """Twice x.

    Args:
        x: A number.
    """
    return 2 * x
