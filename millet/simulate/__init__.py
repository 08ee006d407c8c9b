"""The synthetic ecosystem: users with hidden traits → daily log drops in the landing zone."""

from millet.simulate.run import simulate

__all__ = ["simulate"]
