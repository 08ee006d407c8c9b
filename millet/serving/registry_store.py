"""Feast's file registry, replaced whole on every write: a killed `apply` or `materialize` leaves the old
registry or the new one, never half of one.

Feast's own FileRegistryStore truncates registry.db and writes the new registry into it. A process killed
between the two (a publish SIGKILLed mid-materialization) leaves bytes no later run can parse, and every
publish after it fails with DecodeError until someone deletes the file. This store writes beside the
registry and renames into place (millet.files), as Millet writes every file it replaces. Named in
Millet's Feast configuration (millet.serving.store.feast_config) as the registry's `registry_store_type`.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from feast.infra.registry.file import FileRegistryStore
from feast.protos.feast.core.Registry_pb2 import Registry as RegistryProto

from millet.files import write_bytes


class AtomicFileRegistryStore(FileRegistryStore):
    def update_registry_proto(self, registry_proto: RegistryProto) -> None:
        # What Feast's store stamps on each write, then a temporary file renamed over the registry.
        registry_proto.version_id = str(uuid.uuid4())
        registry_proto.last_updated.FromDatetime(datetime.now(UTC))
        target = self._filepath
        target.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(target, registry_proto.SerializeToString(), durable=True)
