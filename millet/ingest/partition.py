"""Write one Hive-style partition so that readers see the old file or the new one, never half of one."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from millet.files import replacing

PART_FILE = "part-0.parquet"


def partition_dir(table_dir: Path, day: str) -> Path:
    return table_dir / f"dt={day}"


def write_partition(
    data: pa.Table | pa.RecordBatchReader, table_dir: Path, day: str, schema: pa.Schema | None = None
) -> Path:
    """One zstd file per partition, streamed beside its target and renamed into place (atomic on POSIX).

    Batches are cast to `schema` (default: the data's own) as they are written, so a large
    partition never has to be in memory whole.
    """
    target = partition_dir(table_dir, day) / PART_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    schema = schema or data.schema
    batches = data.to_batches() if isinstance(data, pa.Table) else data
    with replacing(target, durable=True) as copy:
        with pq.ParquetWriter(copy, schema, compression="zstd") as writer:
            for batch in batches:
                writer.write_batch(batch.cast(schema))
    return target


def partitions_before(oldest: date, folders: list[Path]) -> list[Path]:
    """Every `dt=<day>` partition dated before `oldest` in each of `folders`. A folder whose name is not a
    day (a copy someone left, `dt=2026-01-05.bak`) is not a partition: neither listed nor in the way."""
    expired = []
    for root in folders:
        for folder in sorted(root.glob("dt=*")):
            try:
                day = date.fromisoformat(folder.name.removeprefix("dt="))
            except ValueError:
                continue
            if day < oldest:
                expired.append(folder)
    return expired


def remove_partitions_before(oldest: date, folders: list[Path]) -> list[Path]:
    """Delete every partition dated before `oldest` in each of `folders`; returns what went."""
    expired = partitions_before(oldest, folders)
    for folder in expired:
        shutil.rmtree(folder)
    return expired

