"""Landing → bronze: validate, quarantine, dedupe, pseudonymise, atomic partition write."""

from millet.ingest.bronze import ingest_channel_day

__all__ = ["ingest_channel_day"]
