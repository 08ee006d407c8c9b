"""Privacy: forgetting people (erasure.py) and removing them from every zone (zones.py)."""
