"""Feast's file registry, replaced whole on every write: a killed `apply` or `materialize` leaves the old
registry or the new one, never half of one.

Feast's own FileRegistryStore truncates registry.db and writes the new registry into it. A process killed
between the two (a publish SIGKILLed mid-materialization) leaves bytes no later run can parse, and every
publish after it fails with DecodeError until someone deletes the file. This store writes beside the
registry and renames into place, as millet.ingest.partition does for bronze. Named in
Millet's Feast configuration (millet.serving.store.feast_config) as the registry's `registry_store_type`.
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime

from feast.infra.registry.file import FileRegistryStore
from feast.protos.feast.core.Registry_pb2 import Registry as RegistryProto


class AtomicFileRegistryStore(FileRegistryStore):
    def update_registry_proto(self, registry_proto: RegistryProto) -> None:
        # What Feast's store stamps on each write, then a temporary file renamed over the registry.
        registry_proto.version_id = str(uuid.uuid4())
        registry_proto.last_updated.FromDatetime(datetime.now(UTC))
        target = self._filepath
        target.parent.mkdir(parents=True, exist_ok=True)
        for stale in target.parent.glob(f".{target.name}.*.tmp"):  # left by a writer that was killed
            stale.unlink(missing_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as handle:
            handle.write(registry_proto.SerializeToString())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
