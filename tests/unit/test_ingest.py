import gzip
import json
from datetime import UTC, date, datetime, timedelta

import pyarrow.parquet as pq
import pytest

from millet.ingest import bronze, ingest_channel_day
from millet.ingest.bronze import ingest_database
from millet.ingest.quarantine import Sealer, readable_text, unseal_file
from millet.settings import Settings
from millet.simulate.run import write_drop
from tests.conftest import TEST_KEY
from tests.helpers import (
    DAY,
    GOOD,
    as_quarantined,
    decoded_strings,
    hmac_key,
    land_consent,
    order_line,
    shown_quarantine,
)

# One line per fault, with the reason ingestion must give it.
FAULTS = {
    '{"event_id": "e9", "amount": ': "malformed_json",
    "[1, 2, 3]": "not_an_object",
    order_line(event_id="e2", order_id=...): "missing_field",
    order_line(event_id="e3", amount="99.5"): "bad_type",
    order_line(event_id="e4", event_ts="yesterday"): "bad_type",
    order_line(event_id="e5", payment_type="crypto"): "unknown_enum",
    order_line(event_id="e6", amount=-5.0): "out_of_range",
    order_line(event_id="e7", event_ts="2026-02-03T00:00:00Z"): "future_timestamp",
}


@pytest.fixture
def settings(tmp_path):
    settings = Settings(data_root=tmp_path / "data", pseudonym_key=TEST_KEY.decode())
    land_consent(settings, {"A000000042": True, "A000000043": True})
    return settings


def _land(settings, lines):
    write_drop(settings.landing_dir / "commerce" / f"dt={DAY}" / "part-0000.jsonl.gz", lines)


def test_every_fault_is_quarantined_with_its_reason_and_counts_add_up(settings):
    good = [order_line(), order_line(event_id="e8", account_id="A000000043", extra_field="drift")]
    _land(settings, [*good, good[0], *FAULTS])  # good[0] delivered twice

    manifest = ingest_channel_day("commerce", DAY, settings)

    assert manifest["lines_in"] == len(good) + 1 + len(FAULTS)
    assert (manifest["rows_out"], manifest["duplicates"], manifest["quarantined"]) == (2, 1, len(FAULTS))
    assert manifest["balanced"]
    quarantine = shown_quarantine(settings, "commerce", DAY)
    assert [(q["shown"], q["reason"]) for q in quarantine] == [
        (as_quarantined(line, TEST_KEY), reason) for line, reason in FAULTS.items()]
    assert all(q["source_file"] == "part-0000.jsonl.gz" for q in quarantine)
    assert manifest["unknown_fields"] == ["extra_field"]
    saved = json.loads((settings.manifests_dir / "ingest" / "commerce" / f"dt={DAY}.json").read_text())
    assert saved == manifest


def test_bronze_holds_user_key_and_no_raw_identifier(settings):
    _land(settings, [order_line(), order_line(event_id="e8", account_id="A000000043")])
    ingest_channel_day("commerce", DAY, settings)

    bronze = pq.read_table(settings.bronze_dir / "commerce" / f"dt={DAY}")
    assert sorted(bronze.column("user_key").to_pylist()) == sorted(
        hmac_key(a, TEST_KEY) for a in ("A000000042", "A000000043")
    )
    raw_values = {GOOD["account_id"], "A000000043", GOOD["device_id"], GOOD["phone"]}
    assert not raw_values & decoded_strings(settings.bronze_dir)


def test_quarantine_holds_no_raw_identifier(settings):
    """Mutations that fail it: quarantine keeping the refused line whole, a refusal's detail quoting the
    identifier it refuses, or a line that is not JSON stored unsealed."""
    lines = [order_line(event_id="q1", device_id="86-123456789012"),  # bad_identifier
             order_line(event_id="q2", phone=8613800000000),  # bad_type
             order_line(event_id="q3", account_id="A12"),  # bad_identifier
             order_line(event_id="q4")[:70]]  # cut short: not JSON
    _land(settings, lines)
    manifest = ingest_channel_day("commerce", DAY, settings)
    assert manifest["reasons"] == {"bad_identifier": 2, "bad_type": 1, "malformed_json": 1}

    quarantine = pq.read_table(settings.quarantine_dir / "commerce" / f"dt={DAY}").to_pylist()
    stored = [str(value) for row in quarantine for value in row.values() if value is not None]
    raw = [GOOD["account_id"], "A12", GOOD["device_id"], "86-123456789012", GOOD["phone"][1:],
           "8613800000000"]
    assert not [(r, s) for r in raw for s in stored if r in s]
    assert all(row["detail"] for row in quarantine)  # still says what is wrong


def test_rerunning_a_day_rewrites_identical_bytes(settings):
    _land(settings, [order_line(event_id=f"e{i}", amount=float(i)) for i in range(50)])
    ingest_channel_day("commerce", DAY, settings)
    part = settings.bronze_dir / "commerce" / f"dt={DAY}" / "part-0.parquet"
    first = part.read_bytes()
    ingest_channel_day("commerce", DAY, settings)
    assert part.read_bytes() == first
    assert [p.name for p in part.parent.iterdir()] == ["part-0.parquet"]  # no temp file left behind


def test_an_empty_file_is_quarantined_as_a_file_and_the_day_loads_empty(settings):
    _land(settings, [])
    manifest = ingest_channel_day("commerce", DAY, settings)
    assert (manifest["lines_in"], manifest["rows_out"], manifest["balanced"]) == (0, 0, True)
    assert manifest["files_quarantined"] == {"part-0000.jsonl.gz": "empty_file"}
    assert pq.read_table(settings.bronze_dir / "commerce" / f"dt={DAY}").num_rows == 0


def test_an_unreadable_file_is_quarantined_whole_and_the_others_still_load(settings):
    _land(settings, [order_line()])
    broken = settings.landing_dir / "commerce" / f"dt={DAY}" / "part-0001.jsonl.gz"
    whole = (settings.landing_dir / "commerce" / f"dt={DAY}" / "part-0000.jsonl.gz").read_bytes()
    broken.write_bytes(whole[: len(whole) // 2])

    manifest = ingest_channel_day("commerce", DAY, settings)

    assert manifest["files_quarantined"] == {"part-0001.jsonl.gz": "truncated_or_corrupt_gzip"}
    assert manifest["rows_out"] == 1 and manifest["balanced"]
    kept = settings.quarantine_dir / "commerce" / "files" / f"dt={DAY}" / "part-0001.jsonl.gz.sealed"
    assert GOOD["phone"].encode() not in kept.read_bytes()  # (gzip cut short, its start is still plain)
    sealer = Sealer(settings.pseudonym_secret)
    assert unseal_file(kept, sealer, "commerce", DAY) == broken.read_bytes()


def test_bad_lines_are_quarantined_alone_and_every_other_line_of_their_file_loads(settings):
    good = [order_line(event_id=f"g{i}", account_id=f"A00000004{2 + i % 2}").encode() for i in range(20)]
    bad = {  # each bad line, and the reason it must get
        order_line(event_id="b1").encode().replace(b'"O1"', b'"caf\xe9 O\xff1"'): "bad_encoding",
        order_line(event_id="b2", event_ts="1900-01-01T00:00:00Z").encode(): "stale_timestamp",
        order_line(event_id="b3", account_id="A" + "0" * 100_000).encode(): "bad_identifier",
        order_line(event_id="b4", order_id="O" * 10_000).encode(): "too_long",
    }
    lines = []  # five good lines, then a bad one, and so on
    for i, line in enumerate(bad):
        lines += [*good[5 * i: 5 * i + 5], line]
    folder = settings.landing_dir / "commerce" / f"dt={DAY}"
    folder.mkdir(parents=True)
    (folder / "part-0000.jsonl.gz").write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    # Beside it, what cannot be split into lines is still quarantined whole.
    truncated = gzip.compress(b"\n".join(good) + b"\n")
    (folder / "part-0001.jsonl.gz").write_bytes(truncated[: len(truncated) // 2])
    (folder / "part-0002.jsonl.gz").write_bytes(gzip.compress(b""))

    manifest = ingest_channel_day("commerce", DAY, settings)

    expected = [(number, bad[line], as_quarantined(line.decode("utf-8", errors="replace"), TEST_KEY))
                for number, line in enumerate(lines, start=1) if line in bad]
    quarantine = shown_quarantine(settings, "commerce", DAY)
    assert [(q["line_no"], q["reason"], q["shown"]) for q in quarantine] == expected
    assert {q["source_file"] for q in quarantine} == {"part-0000.jsonl.gz"}
    assert all(q["detail"] for q in quarantine)
    bronze = pq.read_table(settings.bronze_dir / "commerce" / f"dt={DAY}").column("event_id").to_pylist()
    assert sorted(bronze) == sorted(json.loads(line)["event_id"] for line in good)
    assert manifest["files_quarantined"] == {"part-0001.jsonl.gz": "truncated_or_corrupt_gzip",
                                             "part-0002.jsonl.gz": "empty_file"}
    assert (manifest["lines_in"], manifest["rows_out"], manifest["quarantined"]) == (24, 20, 4)
    assert manifest["reasons"] == dict.fromkeys(bad.values(), 1)
    assert manifest["balanced"]


def test_the_lateness_limit_is_the_settings_one(tmp_path):
    settings = Settings(data_root=tmp_path / "data", pseudonym_key=TEST_KEY.decode(),
                        max_event_lateness_days=2)
    land_consent(settings, {"A000000042": True})
    # The drop of DAY closes at midnight after it: two days before that is the oldest allowed.
    _land(settings, [order_line(event_id="e1", event_ts="2026-01-31T00:00:00Z"),
                     order_line(event_id="e2", event_ts="2026-01-30T23:59:59Z")])
    manifest = ingest_channel_day("commerce", DAY, settings)
    assert (manifest["rows_out"], manifest["reasons"]) == (1, {"stale_timestamp": 1})


def test_an_event_re_sent_days_later_is_removed_as_a_duplicate(settings):
    later = "2026-02-04"
    _land(settings, [order_line(event_id="e1"), order_line(event_id="e2")])
    ingest_channel_day("commerce", DAY, settings)
    write_drop(settings.landing_dir / "commerce" / f"dt={later}" / "part-0000.jsonl.gz",
               [order_line(event_id="e1"), order_line(event_id="e3", event_ts="2026-02-04T09:00:00Z")])

    manifest = ingest_channel_day("commerce", later, settings)

    assert (manifest["rows_out"], manifest["duplicates"], manifest["duplicates_seen_before"]) == (1, 1, 1)
    bronze = pq.read_table(settings.bronze_dir / "commerce" / f"dt={later}")
    assert bronze.column("event_id").to_pylist() == ["e3"]
    # Re-running the earlier day is unaffected by the later one: only earlier days count as seen.
    assert ingest_channel_day("commerce", DAY, settings)["rows_out"] == 2


def test_a_re_send_is_looked_for_in_the_lookback_days_and_no_further(tmp_path):
    """`dedupe_lookback_days` bounds what each night reads: the days before the drop's, the oldest of them
    included (an event re-sent 3 days later is a duplicate, and one re-sent the next day), and no older
    (re-sent 4 days later, it is new to ingestion, counted as rows out). Mutations that fail it: the window
    a day short at either end, a day longer, or not the setting's."""
    settings = Settings(data_root=tmp_path / "data", pseudonym_key=TEST_KEY.decode(), dedupe_lookback_days=3)
    land_consent(settings, {"A000000042": True})
    _land(settings, [order_line(event_id="e1"), order_line(event_id="e2")])
    ingest_channel_day("commerce", DAY, settings)
    first = date.fromisoformat(DAY)
    outcomes = {}
    for later, events in ((3, ["e1", "e3"]), (4, ["e2", "e3"])):  # e3: first sent on day 3
        day = str(first + timedelta(days=later))
        write_drop(settings.landing_dir / "commerce" / f"dt={day}" / "part-0000.jsonl.gz",
                   [order_line(event_id=event) for event in events])
        manifest = ingest_channel_day("commerce", day, settings)
        kept = pq.read_table(settings.bronze_dir / "commerce" / f"dt={day}").column("event_id").to_pylist()
        outcomes[later] = (kept, manifest["duplicates_seen_before"])
    assert outcomes == {3: (["e3"], 1), 4: (["e2"], 1)}


def test_behaviour_of_users_who_declined_is_excluded_and_counted(settings):
    land_consent(settings, {"A000000042": True, "A000000043": False})  # the day's feed, re-delivered
    no_record = order_line(event_id="e3", account_id="A000000044")  # never agreed: not assumed to
    declined = order_line(event_id="e2", account_id="A000000043")
    _land(settings, [order_line(event_id="e1"), declined, no_record])

    manifest = ingest_channel_day("commerce", DAY, settings)

    assert (manifest["rows_out"], manifest["excluded_no_consent"], manifest["balanced"]) == (1, 2, True)
    keys = pq.read_table(settings.bronze_dir / "commerce" / f"dt={DAY}").column("user_key").to_pylist()
    assert keys == [hmac_key("A000000042", TEST_KEY)]


def test_behaviour_needs_the_consent_feed_first(tmp_path):
    settings = Settings(data_root=tmp_path / "data", pseudonym_key=TEST_KEY.decode())
    _land(settings, [order_line()])
    with pytest.raises(RuntimeError, match="consent"):
        ingest_channel_day("commerce", DAY, settings)


def _stamp(instant: datetime) -> str:
    return instant.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_edge_cases_of_the_generated_checks():
    from millet.contracts import contract_for
    from millet.ingest.validate import check_lines

    closes = datetime(2026, 2, 2, tzinfo=UTC)
    cases = {
        order_line(): None,
        order_line(device_id=None, phone=None): None,  # nullable identifiers may be null
        order_line(event_ts="2026-02-01T10:00:00+05:30"): None,
        order_line(event_ts="2026-02-01T10:00:00"): "bad_type",  # no time zone
        order_line(items=2**31): "out_of_range",  # beyond int32
        order_line(items=2**64 - 1): "out_of_range",  # beyond int64
        order_line(items=2.5): "bad_type",
        order_line(items=True): "bad_type",
        order_line(amount=3): None,  # an integer is a fine float
        order_line(event_id=None): "missing_field",
        order_line(event_ts="2026-02-02T00:09:00Z"): None,  # clock drift within tolerance
        "   ": "malformed_json",
        '"just a string"': "not_an_object",
        # Plausibility: 400 days (the default lateness) before the close is the oldest allowed.
        order_line(event_ts="1900-01-01T00:00:00Z"): "stale_timestamp",
        order_line(event_ts=_stamp(closes - timedelta(days=400))): None,
        order_line(event_ts=_stamp(closes - timedelta(days=400, seconds=1))): "stale_timestamp",
        order_line(account_id="A" + "0" * 100_000): "bad_identifier",
        order_line(account_id="A42"): "bad_identifier",
        order_line(account_id=" A000000042"): "bad_identifier",  # the whole value must match
        order_line(device_id="86-123456789012"): "bad_identifier",
        order_line(phone="13800000000"): "bad_identifier",  # no country code
        order_line(event_id="e 1"): "bad_identifier",
        order_line(event_id="e" * 65): "bad_identifier",
        order_line(event_id="e" * 64): None,
        order_line(order_id="O" * 257): "too_long",
        order_line(order_id="é" * 256): None,  # characters, not bytes
        order_line(payment_type="x" * 300): "too_long",  # length before the enum
        # The first failing check in field order wins: event_ts, then account_id, then order_id.
        order_line(event_ts="1900-01-01T00:00:00Z", account_id="A42", order_id="O" * 300): "stale_timestamp",
        order_line(account_id="A42", order_id="O" * 300): "bad_identifier",
    }
    got = check_lines(list(cases), contract_for("commerce"), closes)
    assert [g and g[0] for g in got] == list(cases.values())


def test_a_blank_line_is_no_record_and_line_numbers_are_the_files_own(settings):
    path = settings.landing_dir / "commerce" / f"dt={DAY}" / "part-0000.jsonl.gz"
    path.parent.mkdir(parents=True)
    # Blank lines of every kind are no record; a last line without its newline, however short, is one.
    path.write_bytes(gzip.compress(f"{order_line()}\n\n  \t \n\r\n{{broken\n5".encode()))
    manifest = ingest_channel_day("commerce", DAY, settings)
    assert (manifest["lines_in"], manifest["rows_out"], manifest["quarantined"]) == (3, 1, 2)
    quarantine = shown_quarantine(settings, "commerce", DAY)
    assert [(q["line_no"], q["shown"]) for q in quarantine] == [(5, "{broken"), (6, "5")]
    assert [q["masked_line"] for q in quarantine] == [None, None]  # sealed: no fields to mask


@pytest.mark.parametrize("secret", [b"k", b"x" * 64, b"y" * 65, bytes(range(200))])
def test_the_sql_user_key_is_rfc_2104_hmac_for_keys_of_any_length(secret):
    import duckdb

    from millet.ingest.pseudonymise import KeyChain

    accounts = ["A000000042", "A000000043", "ü-unicode"]
    chain = KeyChain([secret])
    con = duckdb.connect()
    got = con.execute(f"select {chain.sql('a')} from unnest($accounts) as t(a)",
                      {"accounts": accounts, **chain.parameters()}).fetchall()
    assert [key for (key,) in got] == [hmac_key(a, secret) for a in accounts]


def test_a_key_chain_hashes_each_link_over_the_last(tmp_path):
    """Mutation: ingestion hashing with the newest key alone (what a rotation re-keyed would not match)."""
    from millet.ingest.pseudonymise import KeyChain

    accounts = ["A000000042", "A000000043"]
    chained = KeyChain([TEST_KEY, b"second", b"third"]).user_keys(accounts)
    assert chained == [hmac_key(hmac_key(hmac_key(a, TEST_KEY), b"second"), b"third") for a in accounts]


def test_names_that_reach_sql_are_checked_or_quoted(settings, tmp_path):
    """Mutations: the day put into SQL unchecked (ingestion's, and the consent lookup's), and a path
    pasted between quotes instead of quoted (a data root with an apostrophe broke the SQL)."""
    import pyarrow as pa

    from millet.transform.dbt import state_differences

    with pytest.raises(ValueError):
        ingest_channel_day("consent", "2026-01-01' or true --", settings)
    with pytest.raises(KeyError):
        ingest_channel_day("consent; drop table x", "2026-01-01", settings)
    odd = tmp_path / "o'brien's data"
    odd.mkdir()
    pq.write_table(pa.table({"a": [1, 2]}), odd / "x.parquet")
    pq.write_table(pa.table({"a": [2, 3]}), odd / "y.parquet")
    assert state_differences(odd / "x.parquet", odd / "y.parquet", settings) == 2


@pytest.mark.parametrize("shared", [False, True], ids=["its own database", "a history's shared one"])
def test_a_day_that_fails_while_writing_raises_its_own_error(settings, monkeypatch, shared):
    """The bronze result is still open when the write fails; the clean-up must not hide the disk's error."""
    _land(settings, [order_line()])

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bronze, "write_partition", full_disk)
    with ingest_database(settings) as database, pytest.raises(OSError, match="No space left"):
        ingest_channel_day("commerce", DAY, settings, database if shared else None)


def test_an_unreadable_gzip_reads_as_far_as_its_damage():
    """What erasure searches in a sealed unreadable drop. A bad checksum damages no line (every line is
    read); a truncated stream reads up to the cut; two members read one after the other. Mutations that
    fail it: the stream searched as stored; a damaged piece dropped whole (a bad checksum then hid the
    last lines)."""
    lines = "".join(json.dumps({"account_id": f"A{n:012d}"}) + "\n" for n in range(300))
    packed = gzip.compress(lines.encode(), compresslevel=1, mtime=0)
    bad_checksum = packed[:-8] + bytes([packed[-8] ^ 1]) + packed[-7:]
    with pytest.raises(gzip.BadGzipFile):
        gzip.decompress(bad_checksum)
    assert readable_text(bad_checksum) == lines
    assert readable_text(packed + packed) == lines + lines
    cut = readable_text(packed[: len(packed) // 2])
    assert 0 < len(cut) < len(lines) and lines.startswith(cut)
