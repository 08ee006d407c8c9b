"""Data-quality gates: GX checkpoints over feature snapshots; a failed critical check stops publication."""

from millet.quality.checkpoint import QualityGateFailed, check_features

__all__ = ["QualityGateFailed", "check_features"]
