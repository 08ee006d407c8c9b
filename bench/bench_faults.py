"""Fault injection: the whole catalogue of faults, each a real run of Millet's real components.

    .venv/bin/python bench/bench_faults.py --users 300 --ingest-users 10000

1. Simulator faults: a --ingest-users world over --days days with `Faults.realistic`, ingested feed by
   feed; every landing line is read here in plain Python, told apart by the fault the simulator put in
   it (its counts are checked against the simulator's truth log) and followed to bronze, the quarantine
   or a drop (duplicate, no consent). The manifests' own balance is checked too.
2. Bad lines and files beyond the simulator, each appended alone to a real drop: a line that is not
   UTF-8, an event stamped 1900-01-01, a 100,000-character account id, a truncated gzip file, an empty file.
3. Kills: `millet run` for a --users world's first day, SIGKILLed (its whole session) inside ingestion,
   an incremental dbt merge, the GX check and publication, each time re-run; beside it an uninterrupted
   run of a copy of the same world is the reference for bronze, warehouse, snapshots and online values.
4. Services down: Redis (its own redis-server on a free loopback port) absent, stopped mid-publication,
   restarted, and frozen (SIGSTOP); PostgreSQL as Airflow's metadata database on a port where nothing
   listens, and on one that accepts connections but never answers.
Prints one table (Markdown): fault | what Millet did | rows accounted for | data lost. Every figure in it
is computed here from what the runs left; the wall time of each section goes to stderr.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import pickle
import re
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from millet.contracts import contract_for, contracts, ingestion_order
from millet.contracts.base import Contract
from millet.settings import Settings
from millet.transform.dbt import dbt_log_path

DAY = date(2026, 1, 1)
KEY = "bench-only-pseudonym-key"
MILLET = str(Path(sys.executable).with_name("millet"))
REPO = Path(__file__).resolve().parent.parent
SECTIONS = ("simulator", "lines", "kills", "redis", "postgres")
RUN_LIMIT_S = 1200  # one `millet run` of a few hundred users: about 3 min on two busy cores, 7 at worst
POLL_S = 0.02
_ABORT = threading.Event()  # set when the bench ends: a kill thread still running stops
# Simulator record fault → the quarantine reason it must get (schema drift is loaded, and reported).
REASON = {"malformed": "malformed_json", "bad_type": "bad_type", "missing_field": "missing_field",
          "unknown_enum": "unknown_enum", "bad_amount": "out_of_range",
          "future_timestamp": "future_timestamp"}
# What happened to a line, and whether that accounts for it.
ACCOUNTED = {"bronze", "duplicate dropped", "excluded (declined)", "excluded (yes arrived later)",
             "excluded (never a valid yes)"}
KEPT = ("quarantined ", "loaded to bronze")  # held, if not where it belongs (the label says where)


@dataclass
class Row:
    fault: str
    did: str
    accounted: str
    lost: int | str


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=300, help="users of the world `millet run` runs on")
    parser.add_argument("--ingest-users", type=int, default=10_000, help="users of the simulator-fault world")
    parser.add_argument("--days", type=int, default=4, help="days of the simulator-fault world")
    parser.add_argument("--hang-s", type=int, default=30,
                        help="a run that uses no CPU for this long is waiting on nothing: hung")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--keep", type=Path, help="work here and keep it (default: a temporary folder)")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="millet-bench-faults-"))
    began = time.monotonic()
    try:
        rows = run_sections(args, work)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    table = [row for section in SECTIONS for row in rows.get(section, [])]
    print(_table(table))
    print(f"\n{len(table)} faults in {time.monotonic() - began:.0f} s; data lost in all: "
          f"{sum(r.lost for r in table if isinstance(r.lost, int))}")


def run_sections(args, work: Path) -> dict[str, list[Row]]:
    """The kills take longest: they run in a thread of their own, the other sections meanwhile, once the
    uninterrupted run (the kills' reference, and the Redis section's world) has finished."""
    rows, chosen, reference, killing = {}, set(args.sections), None, None
    with ThreadPoolExecutor(max_workers=1) as pool:
        try:
            if chosen & {"kills", "redis"}:
                reference, killed = _kill_worlds(work / "kills", args.users)
                uninterrupted = _start(reference, "reference")
                if "kills" in chosen:
                    killing = pool.submit(_timed, "kills", _kill_each_stage, killed)
                if (code := _finish(uninterrupted, reference)) != 0:
                    raise RuntimeError(f"the uninterrupted run failed ({code}): see {reference.root}")
            others = {"redis": lambda: redis_down(work / "redis", reference, args.hang_s),
                      "postgres": lambda: postgres_down(work / "postgres", args.hang_s),
                      "lines": lambda: bad_lines_and_files(work / "lines"),
                      "simulator": lambda: simulator_faults(work / "simulator", args.ingest_users, args.days)}
            for section in (s for s in others if s in chosen):
                rows[section] = _guarded(section, _timed, section, others[section])
            if killing is not None:
                rows["kills"] = _guarded("kills", lambda: _kill_rows(killing.result(), killed, reference))
        finally:
            _ABORT.set()  # a kill thread still running stops at its next poll
    return rows


def _timed(section: str, work, *args):
    start = time.monotonic()
    try:
        return work(*args)
    finally:
        print(f"{section}: {time.monotonic() - start:.0f} s", file=sys.stderr, flush=True)


def _guarded(section: str, work, *args) -> list[Row]:
    """A section that fails is a row saying so (its traceback on stderr); the others still report."""
    try:
        return work(*args)
    except Exception as exc:
        traceback.print_exc()
        return [Row(f"{section}: the bench itself failed", f"{type(exc).__name__}: {str(exc)[:300]}", "?",
                    "?")]


def _table(rows: list[Row]) -> str:
    lines = ["| fault | what Millet did | rows accounted for | data lost |", "| --- | --- | --- | --- |"]
    lines += [f"| {r.fault} | {r.did} | {r.accounted} | {r.lost} |" for r in rows]
    return "\n".join(lines)


def _settings(root: Path, **changes) -> Settings:
    fixed = {"data_root": root / "data", "secrets_dir": root / "secrets", "pseudonym_key": KEY,
             "task_retries": 0, "airflow_log_level": "WARNING", "online_store": "sqlite"}
    return Settings(**fixed | changes)


def _feeds() -> list[Contract]:
    return [contract_for(channel) for channel in ingestion_order()]


def _ingest_day(settings: Settings, day: date) -> None:
    from millet.ingest import ingest_channel_day

    for contract in _feeds():
        ingest_channel_day(contract.channel, day, settings)


# ---- 1. simulator faults ----------------------------------------------------------------------------------
def simulator_faults(root: Path, users: int, days: int) -> list[Row]:
    from millet.simulate import simulate
    from millet.simulate.faults import RECORD_FAULTS, Faults

    settings = _settings(root)
    simulate(settings.landing_dir, users=users, days=days, start=DAY, seed=7, faults=Faults.realistic(DAY),
             truth_dir=settings.truth_dir)
    for offset in range(days):
        _ingest_day(settings, DAY + timedelta(days=offset))
    truth = _truth_totals(settings, days)
    manifests = [json.loads(p.read_text())
                 for p in sorted((settings.manifests_dir / "ingest").rglob("*.json"))]
    fates, lines_read = _trace_lines(settings, days)
    held = sum(1 for m in manifests for why in m["files_quarantined"].values() if why != "empty_file")
    counted = Counter()  # what the manifests say, per quarantine reason and for duplicates
    for m in manifests:
        counted.update(m["reasons"])
        counted["duplicate"] += m["duplicates"]
    rows = [_fault_row(kind, truth[kind], fates[kind], held,
                       counted[REASON.get(kind, kind)] if kind in (*REASON, "duplicate") else None)
            for kind in (*RECORD_FAULTS, "duplicate", "late")]
    rows.append(_fault_row("none (clean lines)", None, fates["clean"], held))
    rows += _file_fault_rows(settings, truth, manifests)
    rows.append(_balance_row(manifests, lines_read, users, days))
    return rows


def _truth_totals(settings: Settings, days: int) -> Counter:
    """The simulator's own counts of what it injected, summed over channels and days."""
    totals = Counter()
    for offset in range(days):
        day = DAY + timedelta(days=offset)
        log = json.loads((settings.truth_dir / "faults" / f"dt={day}.json").read_text())
        totals["bank_sync_lost"] += log.pop("bank_sync")["repayments_lost"]
        for counts in log.values():
            totals.update(counts)
    totals["late"] = totals.pop("delivered_late_today")  # held back and delivered within the days simulated
    return totals


def _fault_row(kind: str, injected: int | None, fates: Counter, files_held: int,
               in_manifests: int | None = None) -> Row:
    """One simulator fault: how many lines the truth log says it hit, what became of those found."""
    found = sum(fates.values())
    accounted = sum(n for fate, n in fates.items() if fate in ACCOUNTED or fate.startswith(KEPT))
    lost, note = found - accounted, ""
    unread = 0 if injected is None else injected - found
    if unread and files_held:  # a truncated part file cannot be read; it is kept whole in quarantine
        accounted, note = accounted + unread, f"; {unread:,} in a part file quarantined whole"
    elif unread:
        lost, note = lost + abs(unread), f"; {unread:+,} lines logged by the simulator but not found here"
    did = ", ".join(f"{fate} ×{n:,}" for fate, n in fates.most_common()) or "nothing to do"
    if in_manifests is not None:
        note += f" (the manifests count {in_manifests:,})"
    count = f"{accounted:,}/{found:,} lines" if injected is None else f"{accounted:,}/{injected:,} injected"
    return Row(f"simulator: {kind}", did + note, count, lost)


def _trace_lines(settings: Settings, days: int) -> tuple[dict[str, Counter], int]:
    """Each landing line: the fault in it (read here, not by Millet), and where Millet put it."""
    fates = {kind: Counter() for kind in (*REASON, "schema_drift", "duplicate", "late", "clean")}
    consent: dict[str, tuple[str, bool]] = {}  # account → (time, given) of its latest record arrived
    seen: dict[str, set] = {c.channel: set() for c in _feeds()}
    bronze = {c.channel: _bronze_ids(settings, c.channel) for c in _feeds()}
    unconsented: list[tuple[str, str]] = []  # (kind, account) of lines excluded before any consent record
    read = 0
    for offset in range(days):
        day = DAY + timedelta(days=offset)
        for contract in _feeds():
            quarantined = _quarantine(settings, contract.channel, day)
            for line in _readable_lines(settings, contract.channel, day):
                read += 1
                kind, record = _fault_in(line, contract, day)
                where = quarantined.get(line[:2])
                if kind in REASON:
                    fates[kind][_bad_line_fate(where, record, bronze[contract.channel])] += 1
                    continue
                event = record[contract.event_id]
                if event in seen[contract.channel]:
                    kind = "duplicate"
                elif record[contract.event_time][:10] < str(day):
                    kind = "late"
                seen[contract.channel].add(event)
                fate = _good_line_fate(where, kind, record, contract, bronze[contract.channel], consent)
                if fate == "excluded (no consent record)":
                    unconsented.append((kind, record[contract.account]))
                else:
                    fates[kind][fate] += 1
                if contract.is_consent_feed and kind != "duplicate":
                    _note_consent(consent, record)
    for kind, account in unconsented:  # told apart once every consent record has arrived
        said_yes = consent.get(account, ("", False))[1]
        fates[kind]["excluded (yes arrived later)" if said_yes else "excluded (never a valid yes)"] += 1
    return fates, read


def _bad_line_fate(where: str | None, record: dict | None, bronze: Counter) -> str:
    if where is not None:
        return f"quarantined {where}"
    if record is not None and bronze.get(record.get("event_id")):
        return "loaded to bronze (not refused)"
    return "lost"


def _good_line_fate(where: str | None, kind: str, record: dict, contract: Contract, bronze: Counter,
                    consent: dict) -> str:
    if where is not None:
        return f"quarantined {where} (a good line)"
    copies = bronze.get(record[contract.event_id], 0)
    if kind == "duplicate":
        return "duplicate dropped" if copies <= 1 else "loaded twice"
    allowed = not contract.consent_bound or consent.get(record[contract.account], ("", False))[1]
    if copies > 1:
        return "loaded twice"
    if copies == 1:
        return "bronze" if allowed else "loaded without consent"
    if allowed:
        return "lost"
    return "excluded (declined)" if record[contract.account] in consent else "excluded (no consent record)"


def _note_consent(consent: dict, record: dict) -> None:
    stamp = record["event_ts"]
    if record["account_id"] not in consent or consent[record["account_id"]][0] <= stamp:
        consent[record["account_id"]] = (stamp, record["consent_given"])


def _fault_in(line: tuple, contract: Contract, day: date) -> tuple[str, dict | None]:
    """Which of the simulator's record faults a line carries, by the marks faults.py leaves."""
    try:
        record = json.loads(line[2])
    except ValueError:
        return "malformed", None
    rules, stamp = contract.rules, contract.event_time
    if "promo_channel" in record:
        return "schema_drift", record
    if stamp not in record:
        return "missing_field", record
    numbers = [f.name for f in contract.schema if rules[f.name].role == "attribute"
               and (pa.types.is_integer(f.type) or pa.types.is_floating(f.type))]
    if not isinstance(record[stamp], str) or any(isinstance(record.get(n), str) for n in numbers):
        return "bad_type", record
    if any(record.get(n) == "unheard_of" for n, rule in rules.items() if rule.enum):
        return "unknown_enum", record
    if any(record.get(n) in (-1, 10**12) for n, rule in rules.items() if rule.minimum is not None):
        return "bad_amount", record
    if record[stamp][:10] > str(day + timedelta(days=1)):
        return "future_timestamp", record
    return "clean", record


def _readable_lines(settings: Settings, channel: str, day: date):
    """(file, line number, line) of each non-blank line of the drop's files that gzip can read whole."""
    for path in sorted((settings.landing_dir / channel / f"dt={day}").glob("*.jsonl.gz")):
        try:
            text = gzip.decompress(path.read_bytes())
        except (EOFError, OSError):
            continue
        for number, line in enumerate(text.split(b"\n"), start=1):
            if line.strip():
                yield path.name, number, line


def _quarantine(settings: Settings, channel: str, day: date) -> dict[tuple[str, int], str]:
    part = settings.quarantine_dir / channel / f"dt={day}" / "part-0.parquet"
    if not part.exists():
        return {}
    table = pq.read_table(part, columns=["source_file", "line_no", "reason"]).to_pydict()
    keys = zip(table["source_file"], table["line_no"], strict=True)
    return dict(zip(keys, table["reason"], strict=True))


def _bronze_ids(settings: Settings, channel: str) -> Counter:
    parts = sorted((settings.bronze_dir / channel).glob("dt=*/part-0.parquet"))
    return Counter(event for p in parts for event in pq.read_table(p, columns=["event_id"])[0].to_pylist())


def _file_fault_rows(settings: Settings, truth: Counter, manifests: list[dict]) -> list[Row]:
    rows = []
    for kind, reason in (("truncated_gzip", "truncated_or_corrupt_gzip"), ("empty_file", "empty_file")):
        files = [(m["channel"], m["dt"], name) for m in manifests
                 for name, why in m["files_quarantined"].items() if why == reason]
        kept = sum(_kept_whole(settings, *f) for f in files)
        injected = truth["files_truncated" if kind == "truncated_gzip" else "files_empty"]
        did = (f"file quarantined whole ({reason}) ×{len(files)}, {kept} kept byte-identical under "
               "quarantine/<feed>/files") if injected or files else "none injected in this world"
        rows.append(Row(f"simulator: {kind}", did, f"{kept}/{injected} files", abs(injected - kept)))
    lost = truth["bank_sync_lost"]
    rows.append(Row("simulator: bank sync failure (source loses repayments)",
                    "nothing to see at ingestion: the lines never arrive; shown later as "
                    "credit__repayments_unconfirmed_by_bank_now (not exercised here)" if lost else
                    "none in this world: no repayment falls due in its first days",
                    f"{lost} repayments lost at the source", "n/a (at the source)"))
    return rows


def _kept_whole(settings: Settings, channel: str, day: str, name: str) -> bool:
    kept = settings.quarantine_dir / channel / "files" / f"dt={day}" / name
    landed = settings.landing_dir / channel / f"dt={day}" / name
    return kept.exists() and kept.read_bytes() == landed.read_bytes()


def _balance_row(manifests: list[dict], lines_read: int, users: int, days: int) -> Row:
    total = Counter()
    for m in manifests:
        total.update({k: m[k] for k in ("lines_in", "rows_out", "quarantined", "duplicates",
                                        "excluded_no_consent")})
    unbalanced = sum(abs(m["lines_in"] - m["rows_out"] - m["quarantined"] - m["duplicates"]
                         - m["excluded_no_consent"]) for m in manifests)
    return Row(f"simulator: every line, {users:,} users × {days} days ({len(manifests)} channel-days)",
               f"manifests: {total['rows_out']:,} to bronze, {total['quarantined']:,} quarantined, "
               f"{total['duplicates']:,} duplicates, {total['excluded_no_consent']:,} excluded (no consent); "
               f"{sum(not m['balanced'] for m in manifests)} unbalanced",
               f"{total['lines_in']:,} lines_in / {lines_read:,} readable lines counted here",
               unbalanced + abs(total["lines_in"] - lines_read))


# ---- 2. bad lines and files beyond the simulator ----------------------------------------------------------
CHANNEL = "device"  # the busiest feed: a few hundred users make a drop of thousands of lines
BAD_LINES = {  # fault → (how to make it from a good line, the quarantine reason it should get)
    "a line not UTF-8": (lambda line: re.sub(rb'"device_model":"[^"]*"', b'"device_model":"caf\xe9 \xff1"',
                                             line), "bad_encoding"),
    "an event stamped 1900-01-01": (lambda line: re.sub(rb'"event_ts":"[^"]*"',
                                                        b'"event_ts":"1900-01-01T00:00:00.000000Z"', line),
                                    "stale_timestamp"),
    "an account_id 100,000 characters long": (lambda line: re.sub(
        rb'"account_id":"[^"]*"', b'"account_id":"A' + b"0" * 99_999 + b'"', line), "bad_identifier"),
}


def bad_lines_and_files(root: Path) -> list[Row]:
    from millet.ingest import ingest_channel_day
    from millet.simulate import simulate

    settings = _settings(root)
    simulate(settings.landing_dir, users=300, days=1, start=DAY, seed=7, truth_dir=settings.truth_dir)
    ingest_channel_day("consent", DAY, settings)
    baseline = ingest_channel_day(CHANNEL, DAY, settings)
    drop = settings.landing_dir / CHANNEL / f"dt={DAY}"
    loaded = set(_bronze_ids(settings, CHANNEL))
    good = [ln for ln in gzip.decompress(next(drop.glob("*.jsonl.gz")).read_bytes()).split(b"\n")
            if ln and json.loads(ln)["event_id"] in loaded][:6]
    rows = []
    for number, (fault, (make, reason)) in enumerate(BAD_LINES.items()):
        fresh = [_renamed(line, f"x{number}{i}") for i, line in enumerate(good[:4])]
        bad = _renamed(make(good[4]), f"x{number}bad")
        lines = [*fresh[:2], bad, *fresh[2:]]
        rows.append(_extra_file(settings, fault, baseline, loaded, lines, bad, reason))
    whole = gzip.compress(b"\n".join(_renamed(line, f"xt{i}") for i, line in enumerate(good)) + b"\n")
    rows.append(_extra_file(settings, "a truncated gzip file", baseline, loaded, whole[: len(whole) // 2],
                            None, "truncated_or_corrupt_gzip", held=len(good)))
    rows.append(_extra_file(settings, "an empty file", baseline, loaded, gzip.compress(b""), None,
                            "empty_file"))
    return rows


def _renamed(line: bytes, suffix: str) -> bytes:
    """The same event under a new event id, so that it is not a re-delivery of the original."""
    return re.sub(rb'"event_id":"([^"]*)"', lambda m: b'"event_id":"' + m[1] + suffix.encode() + b'"', line)


def _extra_file(settings: Settings, fault: str, baseline: dict, loaded: set, content: list[bytes] | bytes,
                bad: bytes | None, expected: str, held: int = 0) -> Row:
    """Append one file to the drop, re-ingest it, take the file away again; what became of each line."""
    from millet.ingest import ingest_channel_day

    path = settings.landing_dir / CHANNEL / f"dt={DAY}" / "part-0900.jsonl.gz"
    path.write_bytes(content if isinstance(content, bytes) else gzip.compress(b"\n".join(content) + b"\n"))
    try:
        manifest = ingest_channel_day(CHANNEL, DAY, settings)
    except Exception as exc:  # a crash is the finding: every line of the day is then unaccounted for
        return Row(f"bad input: {fault}", f"ingestion crashed: {type(exc).__name__}: {str(exc)[:200]}",
                   "0 lines", baseline["lines_in"])
    finally:
        path.unlink()
    good = set()
    if isinstance(content, list):
        good = {json.loads(line)["event_id"] for line in content if line != bad}
    in_bronze = set(_bronze_ids(settings, CHANNEL))
    lost = len((loaded | good) - in_bronze)
    where = {(q["line_no"]): q["reason"] for q in _quarantine_rows(settings) if q["source_file"] == path.name}
    if bad is not None:
        line_no = content.index(bad) + 1
        reason = where.get(line_no)
        did = (f"line {line_no} quarantined alone as {reason}" if reason and len(where) == 1
               else f"quarantine of that file: {where or 'nothing'}")
        accounted = (f"{int(reason is not None)}/1 bad line quarantined; {len(good & in_bronze)}/{len(good)} "
                     "good lines of its file in bronze")
        lost += int(line_no not in where)
    else:
        reason = manifest["files_quarantined"].get(path.name, "not quarantined")
        did = f"file quarantined whole ({reason}); the drop's other files loaded"
        kept = settings.quarantine_dir / CHANNEL / "files" / f"dt={DAY}" / path.name
        whole = kept.exists() and kept.read_bytes() == content
        accounted = f"{held} lines held in the quarantined file" if held else "no lines in it"
        if held and not whole:
            accounted, lost = "the file was NOT kept byte-identical in quarantine", lost + held
    if reason != expected:
        did += f" (the issue asks for {expected})"
    if not manifest["balanced"]:
        did += "; manifest NOT balanced"
    accounted += f"; the drop's other {len(loaded):,} rows: {len(loaded & in_bronze):,} in bronze"
    return Row(f"bad input: {fault}", did, accounted, lost)


def _quarantine_rows(settings: Settings) -> list[dict]:
    part = settings.quarantine_dir / CHANNEL / f"dt={DAY}" / "part-0.parquet"
    return pq.read_table(part, columns=["source_file", "line_no", "reason"]).to_pylist()


# ---- 3. kills at each stage -------------------------------------------------------------------------------
def _kill_worlds(root: Path, users: int) -> tuple[Settings, Settings]:
    """A small world's landing for its first day, twice: the uninterrupted run's and the killed runs'."""
    from millet.simulate import simulate
    from millet.simulate.faults import Faults

    reference, killed = _settings(root / "reference"), _settings(root / "killed")
    simulate(reference.landing_dir, users=users, days=1, start=DAY, seed=11,
             faults=Faults(duplicate=0.05, late=0.05, malformed=0.01), truth_dir=reference.truth_dir)
    shutil.copytree(reference.root, killed.root)
    return reference, killed


def _kill_each_stage(killed: Settings) -> dict:
    """`millet run` killed inside each stage in turn, then run to the end. Each run after a kill redoes
    every stage (dag.test clears the day's task instances), so the outputs of the stage killed before are
    taken as the next run leaves them; the last run's at the end."""
    found = {"ingestion": _attempt(_kill_inside_ingestion, killed)}
    found["merge"] = _attempt(_kill_inside_a_merge, killed)
    found["after ingestion"] = _outputs(killed, "bronze", "quarantine", "manifests/ingest")
    found["check"] = _attempt(_kill_inside_the_check, killed)
    found["after build"] = _snapshot_rows(killed), _intermediate_rows(killed)
    found["publication"] = _attempt(_kill_while_publishing, killed)
    found["after check"] = _quality(killed)
    found["last"] = _finish(_start(killed, "final"), killed)
    return found


def _kill_rows(found: dict, killed: Settings, reference: Settings) -> list[Row]:
    ingested = _outputs(reference, "bronze", "quarantine", "manifests/ingest")
    built = _snapshot_rows(reference), _intermediate_rows(reference)
    return [_ingestion_row(found["ingestion"], found["after ingestion"], ingested),
            _merge_row(found["merge"], found["after build"], built),
            _check_row(found["check"], found["after check"], _quality(reference)),
            _publish_row(found["publication"], found["last"], killed, reference)]


def _attempt(kill, settings: Settings):
    """What `kill` saw when it struck, or the reason it could not strike inside its stage (a string)."""
    try:
        return kill(settings)
    except RuntimeError as exc:
        if _ABORT.is_set():
            raise
        return f"MISSED: {exc}"


def _start(settings: Settings, name: str, command: tuple[str, ...] = ("run", "--date", str(DAY))):
    """The CLI as a person runs it, with exactly these settings, in a session of its own (a kill reaches
    every process it started); its output goes to a file beside the data root."""
    with open(settings.root.parent / f"{name}.out", "ab") as sink:
        return subprocess.Popen([MILLET, *command], env=_environ(settings), stdout=sink,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _environ(settings: Settings) -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("MILLET_", "AIRFLOW"))}
    return inherited | settings.millet_environ()


def _finish(run: subprocess.Popen, settings: Settings, limit: float = RUN_LIMIT_S) -> int | str:
    deadline = time.monotonic() + limit
    try:
        while time.monotonic() < deadline and not _ABORT.is_set():
            with suppress(subprocess.TimeoutExpired):
                return run.wait(timeout=1)
        return f"still running after {limit:.0f} s" if not _ABORT.is_set() else "aborted"
    finally:
        _stop(run)


def _stop(run: subprocess.Popen) -> None:
    try:
        os.killpg(run.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    run.wait()


def _kill_when(settings: Settings, inside, stage: str):
    """Start a run and SIGKILL its session as soon as `inside()` is true (polled, bounded); returns it."""
    run = _start(settings, f"killed-in-{stage}")
    deadline = time.monotonic() + RUN_LIMIT_S
    try:
        while not (sign := inside()):
            if run.poll() is not None:
                raise RuntimeError(f"the run ended ({run.returncode}) before it was inside {stage}")
            if time.monotonic() > deadline or _ABORT.is_set():
                raise RuntimeError(f"no sign of {stage} after {RUN_LIMIT_S} s, or the bench stopped")
            time.sleep(POLL_S)
    finally:
        _stop(run)
    return sign


def _kill_inside_ingestion(settings: Settings) -> str:
    """Killed once consent and at least one feed are in bronze, before dbt has started."""
    dbt_log = dbt_log_path(settings)
    _kill_when(settings, lambda: _bronze_partitions(settings) >= 2, "ingestion")
    return f"{_bronze_partitions(settings)} of {len(contracts())} feeds written, dbt " + (
        "started" if dbt_log.exists() else "not started")


def _bronze_partitions(settings: Settings) -> int:
    return sum(1 for _ in settings.bronze_dir.glob(f"*/dt={DAY}/part-0.parquet"))


def _kill_inside_a_merge(settings: Settings) -> str:
    """Killed while an intermediate model's transaction is open (dbt logs BEGIN, then COMMIT)."""
    import duckdb

    log = _DbtLog(dbt_log_path(settings))
    models = _kill_when(settings, log.models_in_transaction, "dbt")
    with closing(duckdb.connect(str(settings.warehouse_path), read_only=True)) as con:
        tables = {t for (t,) in con.sql("select table_name from information_schema.tables").fetchall()}
        rows = sum(con.sql(f"select count(*) from {m}").fetchone()[0] for m in models if m in tables)
    return f"{', '.join(sorted(models))} open; {rows} rows of it in the warehouse after the kill"


class _DbtLog:
    EVENT = re.compile(r"On model\.millet\.(int_\w+): (BEGIN|COMMIT)")

    def __init__(self, path: Path):
        self.path, self.offset, self.open, self.partial = path, 0, set(), ""
        if path.exists():
            self.offset = path.stat().st_size

    def models_in_transaction(self) -> set[str]:
        if not self.path.exists():
            return set()
        with open(self.path, "rb") as log:
            log.seek(self.offset)
            text = log.read()
        self.offset += len(text)
        *lines, self.partial = (self.partial + text.decode(errors="replace")).split("\n")
        for line in lines:
            if event := self.EVENT.search(line):
                (self.open.add if event[2] == "BEGIN" else self.open.discard)(event[1])
        return set(self.open)


def _kill_inside_the_check(settings: Settings) -> str:
    _kill_when(settings, lambda: _task_states(settings).get("check_features") == "running", "gx")
    states = _task_states(settings)
    record = "written" if _quality(settings) else "absent"
    return (f"build {states.get('build_features')}, check {states.get('check_features')}, publish "
            f"{states.get('publish_features')}; quality record {record}")


def _kill_while_publishing(settings: Settings) -> str:
    _kill_when(settings, lambda: _views_online(settings)[0] >= 1, "publish")
    written, views = _views_online(settings)
    return f"{written} of {views} feature views written"


def _task_states(settings: Settings) -> dict[str, str | None]:
    path = settings.airflow_home / "airflow.db"
    if not path.exists():
        return {}
    try:
        with closing(sqlite3.connect(path, timeout=30)) as con:
            return dict(con.execute("select task_id, state from task_instance "
                                    "where dag_id = 'millet_nightly'"))
    except sqlite3.OperationalError:  # the tables are not there yet
        return {}


def _views_online(settings: Settings) -> tuple[int, int]:
    """(feature views whose online rows carry the day's snapshot stamp, feature views)."""
    from millet.serving.online.stores import HEADER, PackedSqliteOnlineStore
    from millet.serving.store import snapshot_timestamp

    path = settings.feast_dir / "online.db"
    if not path.exists():
        return 0, 0
    stamp = struct.pack("<q", int(snapshot_timestamp(DAY).timestamp()) * 1_000_000)
    offset = HEADER.size - 8 + 1  # the stamp is the record header's last 8 bytes; SQLite counts from 1
    with closing(sqlite3.connect(path, timeout=30)) as con:
        tables = [name for (name,) in con.execute("select name from sqlite_master where type = 'table'")
                  if name != PackedSqliteOnlineStore._LAYOUTS]
        found = 'select 1 from "{}" where substr(record, {}, 8) = ? limit 1'
        written = sum(bool(con.execute(found.format(name, offset), (stamp,)).fetchone()) for name in tables)
    return written, len(tables)


def _outputs(settings: Settings, *folders: str) -> dict[str, bytes]:
    return {str(p.relative_to(settings.root)): p.read_bytes()
            for folder in folders for p in sorted((settings.root / folder).rglob("*")) if p.is_file()}


def _snapshot_rows(settings: Settings) -> Counter:
    return Counter((p.parent.parent.name, *map(_value, row.values()))
                   for p in settings.snapshots_dir.rglob("*.parquet") for row in pq.read_table(p).to_pylist())


def _intermediate_rows(settings: Settings) -> Counter:
    import duckdb

    with closing(duckdb.connect(str(settings.warehouse_path), read_only=True)) as con:
        models = [m for (m,) in con.sql("select table_name from information_schema.tables "
                                        "where starts_with(table_name, 'int_')").fetchall()]
        return Counter((m, *map(_value, row)) for m in models
                       for row in con.sql(f"select * from {m}").fetchall())


def _value(value) -> str:
    """A value as text to compare; a list as the set it stands for: DuckDB's list(distinct …), which the
    intermediate models use, puts the same elements in a different order from one run to the next."""
    return repr(sorted(value, key=repr) if isinstance(value, list) else value)


def _quality(settings: Settings) -> dict | None:
    path = settings.root / "quality" / f"dt={DAY}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _differences(ours: Counter, theirs: Counter) -> tuple[int, int]:
    """(rows of the reference missing here, rows here beyond the reference's)."""
    return sum((theirs - ours).values()), sum((ours - theirs).values())


def _ingestion_row(kill: str, after: dict[str, bytes], reference: dict[str, bytes]) -> Row:
    ours, theirs = (Counter(e for name, data in files.items() if name.startswith("bronze/")
                            for e in _parquet_ids(data)) for files in (after, reference))
    missing, extra = _differences(ours, theirs)
    same = sum(after.get(name) == data for name, data in reference.items())
    return Row(f"kill -9 inside ingestion ({kill})",
               f"re-run re-ingested every feed: {same}/{len(reference)} bronze, quarantine and manifest "
               "files byte-identical to the uninterrupted run's",
               f"{sum(ours.values()) - extra:,}/{sum(theirs.values()):,} bronze rows ({extra} extra)",
               missing + extra)


def _parquet_ids(data: bytes) -> list[str]:
    import io

    return pq.read_table(io.BytesIO(data), columns=["event_id"])[0].to_pylist()


def _merge_row(kill: str, after: tuple[Counter, Counter], reference: tuple[Counter, Counter]) -> Row:
    (snap_missing, snap_extra), (int_missing, int_extra) = (
        _differences(ours, theirs) for ours, theirs in zip(after, reference, strict=True))
    missing, extra = snap_missing + int_missing, snap_extra + int_extra
    snapshot, intermediate = (sum(c.values()) for c in reference)
    verdict = "equal" if missing + extra == 0 else "DIFFER from"
    return Row(f"kill -9 inside dbt ({kill})",
               f"re-run rebuilt: snapshot and intermediate rows {verdict} the uninterrupted run's "
               "(list columns compared as sets)",
               f"{snapshot - snap_missing:,}/{snapshot:,} snapshot rows, "
               f"{intermediate - int_missing:,}/{intermediate:,} intermediate rows ({extra} extra)",
               missing + extra)


def _check_row(kill: str, after: dict | None, reference: dict | None) -> Row:
    same = after is not None and after == reference
    checked = sum(suite["rows"] for suite in (reference or {}).values())
    verdict = "equals" if same else "DIFFERS from"
    return Row(f"kill -9 inside the GX check ({kill})",
               f"nothing published; the re-run checked again: its record {verdict} the uninterrupted run's",
               f"{checked:,} snapshot rows checked by {len(reference or {})} suites",
               0 if same else "record differs")


def _publish_row(kill: str, last: int | str, killed: Settings, reference: Settings) -> Row:
    fault = f"kill -9 while publishing ({kill})"
    if last != 0:
        return Row(fault, f"the re-run did not succeed ({last}); see {killed.root}", "?", "unknown")
    users = _snapshot_users(reference)
    ours, theirs = _online_values(killed, users), _online_values(reference, users)
    wrong = _wrong_values(ours, theirs)
    leftovers = [str(p) for folder in ("bronze", "quarantine", "snapshots", "feast")
                 for pattern in (".*.tmp", "tmp_*") for p in (killed.root / folder).rglob(pattern)]
    total = sum(len(v) for v in theirs.values())
    return Row(fault, f"re-run re-published: online values {'equal' if not wrong else 'DIFFER from'} the "
               f"uninterrupted run's; {len(leftovers)} temporary files left behind",
               f"{total - wrong:,}/{total:,} online values ({len(users)} users)", wrong + len(leftovers))


ONLINE_VALUES = """
import pickle, sys
from millet.serving.store import open_store
store = open_store()
users = pickle.loads(open(sys.argv[1], "rb").read())
features = [f"{view.name}:{field.name}" for view in store.list_feature_views() for field in view.features]
values = store.get_online_features(features=features, entity_rows=[{"user_key": u} for u in users])
open(sys.argv[2], "wb").write(pickle.dumps(values.to_dict(include_event_timestamps=True)))
"""


def _online_values(settings: Settings, users: list[str]) -> dict[str, list]:
    """Every feature of every user, with its timestamp, read through Feast in a process of its own."""
    asked, answer = settings.root.parent / "online.in", settings.root.parent / "online.out"
    asked.write_bytes(pickle.dumps(users))
    done = subprocess.run([sys.executable, "-c", ONLINE_VALUES, str(asked), str(answer)],
                          env=_environ(settings), capture_output=True, text=True, timeout=600)
    if done.returncode:
        raise RuntimeError(f"reading online values failed: {done.stderr[-2000:]}")
    return pickle.loads(answer.read_bytes())


def _wrong_values(ours: dict[str, list], theirs: dict[str, list]) -> int:
    return sum(repr(a) != repr(b) for name, values in theirs.items()
               for a, b in zip(ours.get(name, [None] * len(values)), values, strict=True))


# ---- 4. services down -------------------------------------------------------------------------------------
PUBLISH = "import sys; from millet.serving import publish_features; print(publish_features(sys.argv[1]))"


def redis_down(root: Path, reference: Settings, hang_s: int) -> list[Row]:
    """Publication (what the DAG's publish task calls) into Redis: absent, stopped midway, back, frozen."""
    port = _free_port()
    settings = _settings(root, online_store="redis", redis_url=f"127.0.0.1:{port},db=0")
    shutil.copytree(reference.root, settings.root)
    shutil.rmtree(settings.feast_dir)  # a new online store: its registry starts afresh too
    users = _snapshot_users(settings)
    rows = [_publish_against(settings, "Redis not running", None, hang_s)]
    server = _redis_server(root, port)
    try:
        rows.append(_publish_against(settings, "Redis stopped mid-publication", server, hang_s))
        server = _redis_server(root, port)
        rows.append(_republish(settings, reference, users, hang_s))
        os.kill(server.pid, signal.SIGSTOP)
        frozen = "Redis frozen (SIGSTOP: connects, never answers)"
        rows.append(_publish_against(settings, frozen, None, hang_s, "nothing overwritten: the online store "
                                     "still holds the last publication"))
        os.kill(server.pid, signal.SIGCONT)
    finally:
        _stop(server)
    return rows


def _snapshot_users(settings: Settings) -> list[str]:
    return sorted({u for p in settings.snapshots_dir.rglob("*.parquet")
                   for u in pq.read_table(p, columns=["user_key"])[0].to_pylist()})


def _republish(settings: Settings, reference: Settings, users: list[str], hang_s: int) -> Row:
    """Restarted (empty, as a Redis without persistence comes back): a re-run must publish everything."""
    outcome = _publish(settings, hang_s)
    theirs = _online_values(reference, users)
    total = sum(len(v) for v in theirs.values())
    wrong = _wrong_values(_online_values(settings, users), theirs) if outcome.code == 0 else total
    return Row("Redis back (restarted empty): publication re-run", f"publish {outcome.said(cli=False)}",
               f"{total - wrong:,}/{total:,} online values ({len(users)} users) equal the SQLite reference's",
               wrong)


def _publish_against(settings: Settings, fault: str, stop: subprocess.Popen | None, hang_s: int,
                     then: str = "the online store is completed by the re-run below") -> Row:
    """Publish; with `stop`, stop that Redis as soon as the first keys are in it."""
    keys = []
    during = None if stop is None else lambda run: keys.append(_stop_redis_when_written(stop, settings, run))
    outcome = _bounded([sys.executable, "-c", PUBLISH, str(DAY)], settings, hang_s, during)
    when = f" ({keys[0]} keys written when stopped)" if keys else ""
    users = len(_snapshot_users(settings))
    return Row(fault + when, f"publish {outcome.said(cli=False)}",
               f"snapshot intact ({users} users); {then}", 0)


def _stop_redis_when_written(server: subprocess.Popen, settings: Settings, run: subprocess.Popen) -> int:
    from redis import Redis

    host, port = settings.redis_url.split(",")[0].split(":")
    client, deadline = Redis(host=host, port=int(port), socket_timeout=5), time.monotonic() + RUN_LIMIT_S
    while (keys := client.dbsize()) < 2 and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    server.terminate()
    server.wait(timeout=30)
    return keys


@dataclass
class Outcome:
    code: int | None  # None: it hung (sat idle too long), then was killed
    seconds: float
    output: str
    idle_s: float = 0.0

    def said(self, cli: bool = True) -> str:
        """What it ended with: the CLI's own message, or the exception a traceback ended with."""
        if self.code is None:
            return (f"HUNG: no CPU used for {self.idle_s:.0f} s, {self.seconds:.0f} s after it started "
                    f"(killed); stuck in {_hang_site(self.output)}")
        lines = [ln.strip() for ln in self.output.splitlines() if ln.strip()]
        own = [ln for ln in lines if ln.startswith("millet: ")]
        errors = [ln for ln in lines if re.match(r"[A-Za-z_][\w.]*(Error|Exception|Exit)\b.*: ", ln)]
        said = own[-1] if own else errors[-1] if errors else lines[-1] if lines else "(no output)"
        if cli and not own and any(ln.startswith("Traceback") for ln in lines):
            said = f"a bare traceback ending {said}"
        return f"exited {self.code} after {self.seconds:.0f} s: {said[:400]}".replace("|", "/")


def _bounded(argv: list[str], settings: Settings, idle_s: float, during=None) -> Outcome:
    """Run it until it ends, or until it and its children have used no CPU for `idle_s` (blocked on
    something that does not answer): then have Python print where it is (faulthandler) and kill it."""
    import psutil

    began = time.monotonic()
    with tempfile.TemporaryFile() as sink:
        run = subprocess.Popen(argv, env=_environ(settings) | {"PYTHONFAULTHANDLER": "1"}, stdout=sink,
                               stderr=subprocess.STDOUT, start_new_session=True)
        try:
            if during is not None:
                during(run)
            code, idle = _wait_while_busy(run, psutil.Process(run.pid), idle_s)
            if code is None:
                os.kill(run.pid, signal.SIGABRT)  # faulthandler prints every thread's stack
                with suppress(subprocess.TimeoutExpired):
                    run.wait(timeout=15)
        finally:
            _stop(run)
        sink.seek(0)
        return Outcome(code, time.monotonic() - began, sink.read().decode(errors="replace"), idle)


def _wait_while_busy(run: subprocess.Popen, process, idle_s: float) -> tuple[int | None, float]:
    """(exit code, 0) when it ends; (None, seconds idle) when its CPU time stops moving for `idle_s`."""
    import psutil

    deadline, used, still_since = time.monotonic() + RUN_LIMIT_S, -1.0, time.monotonic()
    while time.monotonic() < deadline:
        with suppress(subprocess.TimeoutExpired):
            return run.wait(timeout=1), 0.0
        try:
            now = sum(sum(p.cpu_times()[:2]) for p in [process, *process.children(recursive=True)])
        except psutil.NoSuchProcess:
            continue
        if now - used > 0.05:
            used, still_since = now, time.monotonic()
        elif time.monotonic() - still_since >= idle_s:
            return None, time.monotonic() - still_since
    return None, 0.0


def _hang_site(output: str) -> str:
    """The innermost frame of the main thread's stack as faulthandler printed it, and Millet's own."""
    dump = output[output.rfind("Current thread"):]
    frames = re.findall(r'File "([^"]+)", line (\d+) in (\S+)', dump.split("\n\n")[0])
    if not frames:
        return "(no stack printed)"
    libraries = [f for f in frames if "/site-packages/" in f[0]]
    ours = [f for f in frames if f[0].startswith(str(REPO / "millet"))]
    where = dict.fromkeys([frames[0], *libraries[:1], *ours[:1]])  # innermost first, each once
    return " ← ".join(f"{func} ({_short(path)}:{line})" for path, line, func in where)


def _short(path: str) -> str:
    if "/site-packages/" in path:
        return path.split("/site-packages/")[-1]
    return str(Path(path).relative_to(REPO)) if path.startswith(str(REPO)) else Path(path).name


def _publish(settings: Settings, idle_s: float) -> Outcome:
    return _bounded([sys.executable, "-c", PUBLISH, str(DAY)], settings, idle_s)


def _redis_server(root: Path, port: int) -> subprocess.Popen:
    root.mkdir(parents=True, exist_ok=True)
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", str(root)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 30
    while not _listening(port):
        if server.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"redis-server did not start on port {port}")
        time.sleep(0.05)
    return server


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_down(root: Path, hang_s: int) -> list[Row]:
    """`millet backfill` with Airflow's metadata on PostgreSQL that is not there, or never answers."""
    rows = [_backfill_against(root / "refused", "PostgreSQL down (nothing listening on its port)",
                              _free_port(), hang_s)]
    with _black_hole() as port:
        rows.append(_backfill_against(root / "silent", "PostgreSQL unresponsive (accepts, never answers)",
                                      port, hang_s))
    return rows


def _backfill_against(root: Path, fault: str, port: int, hang_s: int) -> Row:
    settings = _settings(root, airflow_database_url=f"postgresql+psycopg://postgres@127.0.0.1:{port}/millet_bench")
    settings.root.mkdir(parents=True)
    outcome = _bounded([MILLET, "backfill", "--start", str(DAY), "--end", str(DAY)], settings, hang_s)
    written = [p for p in settings.bronze_dir.rglob("*") if p.is_file()]
    return Row(fault, f"`millet backfill` {outcome.said()}", f"no day run; {len(written)} bronze files", 0)


@contextmanager
def _black_hole():
    """A loopback port whose connections the kernel accepts and nobody ever reads or answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s.getsockname()[1]


if __name__ == "__main__":
    main()
