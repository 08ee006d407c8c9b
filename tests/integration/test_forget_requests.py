"""`millet forget` and the night's erasure: a request that lands while the zones are purged is applied the
next night, not deleted unread; a quarantined drop nobody could read goes whole when it names the person."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pyarrow.parquet as pq
import pytest

from millet.ingest import ingest_channel_day
from millet.ingest.quarantine import Sealer, unsealed_lines
from millet.privacy import erasure
from millet.settings import Settings
from millet.simulate.run import write_drop
from tests.conftest import TEST_KEY
from tests.helpers import hmac_key

DAY = date(2026, 3, 1)


def _tombstoned(settings: Settings) -> set[str]:
    return set(pq.read_table(settings.tombstones_path, columns=["user_key"]).column(0).to_pylist())


def test_a_request_filed_while_the_zones_are_purged_is_applied_the_next_night(tmp_path, monkeypatch):
    """Mutation that fails it: every request file deleted after the purge, read or not."""
    settings = Settings(data_root=tmp_path / "data", pseudonym_key=TEST_KEY.decode())
    first = erasure.forget(["A100000000001"], settings)
    purge, late = erasure.purge, []

    def purge_while_a_request_lands(keys, scope, settings):
        if not late:  # the operator's `millet forget`, mid-purge
            late.extend(erasure.forget(["A100000000002"], settings))
        return purge(keys, scope, settings)

    monkeypatch.setattr(erasure, "purge", purge_while_a_request_lands)
    assert erasure.apply_erasures(DAY, settings)["forgotten"] == 1
    assert _tombstoned(settings) == set(first)

    monkeypatch.setattr(erasure, "purge", purge)
    assert erasure.apply_erasures(DAY, settings)["forgotten"] == 1  # the next night
    assert _tombstoned(settings) == set(first) | set(late)
    assert list((settings.erasure_dir / "requests").glob("*.parquet")) == []


def test_an_unreadable_drop_naming_a_forgotten_person_leaves_quarantine_and_the_others_stay(tmp_path):
    """Two truncated gzip drops (as the simulator cuts them), quarantined whole and sealed; one holds the
    forgotten person's lines. Mutation that fails it: the sealed file searched as stored (compressed)."""
    settings = Settings(data_root=tmp_path / "data", pseudonym_key=TEST_KEY.decode())
    accounts = ["A100000000001", "A100000000002"]
    for n, account in enumerate(accounts):
        lines = [json.dumps({"account_id": account, "loan_id": f"L-{n}-{i}"}) for i in range(500)]
        write_drop(settings.landing_dir / "loans" / f"dt={DAY}" / f"part-{n:04d}.jsonl.gz", lines,
                   truncate=True)
    ingest_channel_day("loans", DAY, settings)  # a feed that needs no consent drop first
    files = settings.quarantine_dir / "loans" / "files"
    assert sorted(p.name for p in files.rglob("*") if p.is_file()) == [
        "part-0000.jsonl.gz.sealed", "part-0001.jsonl.gz.sealed"]

    erasure.forget(accounts[:1], settings)
    assert erasure.apply_erasures(DAY, settings)["forgotten"] == 1
    assert sorted(p.name for p in files.rglob("*") if p.is_file()) == ["part-0001.jsonl.gz.sealed"]


def test_an_account_id_not_in_the_contracts_format_is_refused_and_nothing_is_queued(tmp_path):
    """A pasted space or a lower-case id hashes to a key that matches nobody: the person would never be
    erased while the night reported them forgotten. Mutation that fails it: the ids hashed unchecked."""
    settings = Settings(data_root=tmp_path / "data", pseudonym_key=TEST_KEY.decode())
    for typed in ("A100000000001 ", "a100000000001", "A12"):
        with pytest.raises(ValueError, match="not an account id"):
            erasure.forget(["A100000000002", typed], settings)
    assert not (settings.erasure_dir / "requests").exists() or not any(
        (settings.erasure_dir / "requests").iterdir())
    assert len(erasure.forget(["A100000000001"], settings)) == 1


def test_a_forgotten_persons_refused_lines_and_unreadable_drops_are_not_quarantined_again(tmp_path):
    """After the erasure, their lines still arrive (late, re-sent, a re-run): refused ones are kept out of
    quarantine as good ones are kept out of bronze; someone else's stay. Mutation that fails it: refused
    lines written whatever the tombstones say."""
    settings = Settings(data_root=tmp_path / "data", pseudonym_key=TEST_KEY.decode())
    gone, kept = "A100000000001", "A100000000002"
    erasure.forget([gone], settings)
    erasure.apply_erasures(DAY, settings)
    later = DAY + timedelta(days=1)
    folder = settings.landing_dir / "loans" / f"dt={later}"
    lines = [line for account in (gone, kept) for line in (
        json.dumps({"account_id": account}),  # a JSON object with fields missing: masked
        json.dumps({"account_id": account, "loan_id": "L-1", "amount": 12})[:-4])]  # cut short: sealed
    write_drop(folder / "part-0000.jsonl.gz", lines)
    for n, account in enumerate((gone, kept), start=1):  # unreadable: sealed whole
        write_drop(folder / f"part-{n:04d}.jsonl.gz", [json.dumps({"account_id": account})] * 500,
                   truncate=True)
    manifest = ingest_channel_day("loans", later, settings)

    table = pq.read_table(settings.quarantine_dir / "loans" / f"dt={later}" / "part-0.parquet")
    originals = unsealed_lines(table, Sealer(settings.pseudonym_secret), "loans", str(later))
    shown = [masked or original for masked, original in zip(table.column("masked_line").to_pylist(),
                                                             originals, strict=True)]
    assert len(shown) == 2 and all(hmac_key(kept, TEST_KEY) in line or kept in line for line in shown)
    assert not any(hmac_key(gone, TEST_KEY) in line or gone in line for line in shown)
    files = settings.quarantine_dir / "loans" / "files" / f"dt={later}"
    assert sorted(p.name for p in files.iterdir()) == ["part-0002.jsonl.gz.sealed"]
    assert "not kept" in manifest["files_quarantined"]["part-0001.jsonl.gz"]
    assert manifest["balanced"]
