"""A run killed (SIGKILL) mid-write leaves the old partition or the new one, never half of one."""

import random
import select
import subprocess
import sys
import time

import pyarrow.parquet as pq

from millet.ingest import ingest_channel_day
from millet.settings import Settings
from millet.simulate.run import write_drop
from tests.conftest import TEST_KEY
from tests.helpers import DAY, land_consent, order_line

# The child re-writes the day's bronze partition as fast as it can, so a kill almost always lands
# inside the writer: between creating the temporary file and renaming it into place.
REWRITE_FOREVER = """
import sys
import pyarrow.parquet as pq
from millet.ingest.partition import write_partition
table_dir, day, source = sys.argv[1:]
table = pq.read_table(source)
print("ready", flush=True)
while True:
    write_partition(table, __import__("pathlib").Path(table_dir), day)
"""


def test_sigkill_mid_write_never_leaves_a_partial_partition(tmp_path):
    settings = Settings(data_root=tmp_path / "data", pseudonym_key=TEST_KEY.decode())
    land_consent(settings, {"A000000042": True})
    lines = [order_line(event_id=f"e{i:06d}", amount=float(i % 5000)) for i in range(30_000)]
    write_drop(settings.landing_dir / "commerce" / f"dt={DAY}" / "part-0000.jsonl.gz", lines)
    ingest_channel_day("commerce", DAY, settings)
    part = settings.bronze_dir / "commerce" / f"dt={DAY}" / "part-0.parquet"
    reference = part.read_bytes()
    source = tmp_path / "reference.parquet"
    source.write_bytes(reference)

    rng = random.Random(1)
    interrupted = 0
    for _ in range(8):
        child = subprocess.Popen([sys.executable, "-c", REWRITE_FOREVER, str(part.parent.parent), DAY,
                                  str(source)], stdout=subprocess.PIPE, text=True)
        try:
            assert select.select([child.stdout], [], [], 120)[0], "the writer did not start in 120 s"
            assert child.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0.05, 0.5))  # when to strike, not synchronisation
        finally:
            child.kill()  # SIGKILL: it rewrites forever, and leaves what a killed writer leaves
            child.wait(timeout=30)
            child.stdout.close()
        assert part.read_bytes() == reference  # each write has the same content: old == new, never partial
        interrupted += bool(list(part.parent.glob(".*.tmp")))
    assert interrupted >= 1, "no kill landed inside a write; the test proved nothing"

    ingest_channel_day("commerce", DAY, settings)  # the re-run
    assert part.read_bytes() == reference
    assert [p.name for p in part.parent.iterdir()] == ["part-0.parquet"]  # stale temporary files cleared
    assert pq.read_table(part).num_rows == len(lines)
