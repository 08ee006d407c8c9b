"""Alerts: one record per finding, written to the alert log first, then delivered to every configured sink.

The log (alerts/alerts.jsonl under the data root) is always on. Each configured sink (a Slack-compatible
webhook, e-mail over SMTP) has an outbox folder: an alert is put there before delivery is tried and
removed once the sink took it, so a sink that is down loses nothing: what it missed is delivered on the
next run (every call here first retries what waits). Delivery never raises: a failed delivery must not
fail the DAG whose findings it carries. An alert already in the log (the same finding at the same
severity on the same day, on a re-run) is neither logged nor sent again. The night's checks run in
parallel processes: they log and queue one at a time, and one delivers for all (locks under the alerts
folder), so none sends what another took, and none waits on another's delivery.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import smtplib
import socket
import threading
import urllib.error
import urllib.request
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

from millet.files import write_text
from millet.locks import try_lock
from millet.settings import Settings

log = logging.getLogger(__name__)
SAMPLE_KEYS = 20  # failing keys an alert carries; the full list stays in the day's tables


@dataclass(frozen=True)
class Alert:
    severity: str  # "critical" (publication stopped) or "warning"
    check: str
    dataset: str
    logical_date: str
    summary: str
    counts: dict = field(default_factory=dict)
    sample_keys: list[str] = field(default_factory=list)  # pseudonymous keys, feature names, ...
    report: str | None = None
    docs: str | None = None  # the GX Data Docs page of the validation that found it
    raised_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def id(self) -> str:
        """The same finding at the same severity on the same day is one alert, however often the day is
        re-run; one that became critical (a warm-up over, a threshold moved) is another."""
        what = f"{self.severity}|{self.check}|{self.dataset}|{self.logical_date}|{self.summary}"
        return hashlib.sha256(what.encode()).hexdigest()[:16]

    def record(self) -> dict:
        return {"id": self.id, **asdict(self)}


def alerts_dir(settings: Settings) -> Path:
    return settings.root / "alerts"


def report_path(day: str, settings: Settings) -> Path:
    """The day's quality report (millet.quality.report), which every alert of the day links to."""
    return settings.root / "reports" / f"dt={day}.html"


def alert_log(settings: Settings) -> Path:
    return alerts_dir(settings) / "alerts.jsonl"


def raise_alerts(alerts: list[Alert], settings: Settings) -> dict[str, int]:
    """Log `alerts` not logged before, queue them for every sink, deliver what waits; returns what is still
    waiting per sink."""
    with _locked(settings, "log"):
        new = _not_logged(alerts, settings)
        for sink in _sinks(settings):  # queued before logged: a kill between the two loses no alert
            outbox = _outbox(settings, sink)
            outbox.mkdir(parents=True, exist_ok=True)
            for alert in new:
                write_text(outbox / f"{alert.id}.json", json.dumps(alert.record()))
        if new:
            _append_to_log(new, settings)
    return deliver_pending(settings)


def deliver_pending(settings: Settings) -> dict[str, int]:
    """Try the waiting alerts of every configured sink, oldest first, until the sink does not answer (it is
    not tried again in this call); keep those a sink did not take; return how many wait per sink. One process
    delivers at a time: another that finds it delivering returns at once, and what it queued is taken by
    the one delivering, which looks for new alerts before it lets go."""
    delivering = _try_lock(settings, "deliver")
    if delivering is None:
        return _waiting(settings)
    tried: set[tuple[Path, int]] = set()
    down: set[str] = set()
    try:
        while True:
            _deliver(settings, tried, down)
            with _locked(settings, "log"):  # no one queues while this looks
                if not _untried(settings, tried, down):
                    delivering.close()  # let go while no one queues: whoever queues next finds it free
                    return _waiting(settings)
    finally:
        delivering.close()


def _deliver(settings: Settings, tried: set[tuple[Path, int]], down: set[str]) -> None:
    for sink, send in _sinks(settings).items():
        if sink in down:
            continue
        for path, inode in sorted(_untried_of(settings, sink, tried), key=lambda found: _queued_at(found[0])):
            tried.add((path, inode))
            try:
                _within(settings.alert_timeout_s, send, json.loads(path.read_text()), settings)
            except Exception as exc:  # any failure of a sink: keep the alert, tell the log, carry on
                unreachable = _unreachable(exc)
                why = "cannot be used as set" if isinstance(exc, SinkMisconfigured) else "does not answer"
                log.warning("alert %s not delivered to %s (%s: %s); kept in %s for the next run%s", path.stem,
                            sink, type(exc).__name__, exc, path.parent,
                            f"; no other is tried: the {sink} {why}" if unreachable else "")
                if unreachable:  # one timeout, not one per waiting alert
                    down.add(sink)
                    break
                continue  # this alert refused: the others still go
            with suppress(OSError):  # sent: were its file not removed, the next run would send it again
                path.unlink(missing_ok=True)


def _within(seconds: float, send, record: dict, settings: Settings) -> None:
    """send(record, settings), given up after `seconds` in all (TimeoutError). A socket's timeout bounds
    each wait on its own, so a receiver that answers a byte at a time, or a name lookup that hangs, could
    hold a night's alerting, and a failing task's callback, without end. The send goes on in a thread of
    its own meanwhile; its alert stays queued, so a receiver that takes it late gets it again next run."""
    outcome: list[BaseException | None] = []

    def deliver() -> None:
        try:
            send(record, settings)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            outcome.append(exc)
        else:
            outcome.append(None)

    sending = threading.Thread(target=deliver, name="millet-alert-send", daemon=True)
    sending.start()
    sending.join(seconds)
    if not outcome:
        raise TimeoutError(f"the sink had not taken the alert after {seconds:g} s")
    if outcome[0] is not None:
        raise outcome[0]


def _unreachable(exc: Exception) -> bool:
    """The sink did not answer (refused, timed out, no such host, dropped) or cannot be used as set, as
    against answering no to this one alert (an HTTP error status, a refused recipient), which says nothing
    of the next."""
    if isinstance(exc, urllib.error.HTTPError):
        return False
    return isinstance(exc, (urllib.error.URLError, ConnectionError, TimeoutError, socket.gaierror,
                            smtplib.SMTPConnectError, smtplib.SMTPServerDisconnected, SinkMisconfigured))


def _queued_at(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def _untried_of(settings: Settings, sink: str, tried: set[tuple[Path, int]]) -> list[tuple[Path, int]]:
    """The sink's queued files not tried in this call (a file queued again under the same name is new)."""
    found = []
    for path in _outbox(settings, sink).glob("*.json"):
        with suppress(OSError):
            found.append((path, path.stat().st_ino))
    return [queued for queued in found if queued not in tried]


def _untried(settings: Settings, tried: set[tuple[Path, int]], down: set[str]) -> bool:
    return any(_untried_of(settings, sink, tried) for sink in _sinks(settings) if sink not in down)


def _waiting(settings: Settings) -> dict[str, int]:
    return {sink: len(list(_outbox(settings, sink).glob("*.json"))) for sink in _sinks(settings)}


@contextmanager
def _locked(settings: Settings, name: str):
    """An exclusive lock under the alerts folder, waited for: held only while the log and the outboxes are
    read and written, never across a delivery."""
    with _lock_file(settings, name) as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield  # closing the file lets go


def _try_lock(settings: Settings, name: str):
    """The lock's open file if it was free (closing it lets go), else None."""
    return try_lock(_lock_path(settings, name))


def _lock_file(settings: Settings, name: str):
    alerts_dir(settings).mkdir(parents=True, exist_ok=True)
    return _lock_path(settings, name).open("a")


def _lock_path(settings: Settings, name: str) -> Path:
    return alerts_dir(settings) / f".{name}.lock"


def _not_logged(alerts: list[Alert], settings: Settings) -> list[Alert]:
    """`alerts` whose id the log does not hold, each once."""
    seen = {record.get("id") for record in logged_alerts(settings)}
    new = {}
    for alert in alerts:
        if alert.id not in seen:
            new.setdefault(alert.id, alert)
    return list(new.values())


def logged_alerts(settings: Settings) -> list[dict]:
    """The alert log's records, oldest first; a line a killed process cut short is none."""
    path, records = alert_log(settings), []
    for line in path.read_text().splitlines() if path.exists() else []:
        with suppress(ValueError):
            records.append(json.loads(line))
    return records


def _append_to_log(alerts: list[Alert], settings: Settings) -> None:
    path = alert_log(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    _end_a_line_cut_short(path)
    with path.open("a") as out:
        for alert in alerts:
            out.write(json.dumps(alert.record()) + "\n")
        out.flush()
        os.fsync(out.fileno())


def _end_a_line_cut_short(path: Path) -> None:
    """A line a killed process cut short ends here, not inside the next record."""
    if path.exists() and path.stat().st_size:
        with path.open("rb+") as log_file:
            log_file.seek(-1, os.SEEK_END)
            if log_file.read(1) != b"\n":
                log_file.write(b"\n")


def _outbox(settings: Settings, sink: str) -> Path:
    return alerts_dir(settings) / "outbox" / sink


def _sinks(settings: Settings) -> dict:
    sinks = {}
    if settings.alert_webhook_url is not None:
        sinks["webhook"] = send_webhook
    if settings.alert_smtp_host and settings.alert_email_to:
        sinks["email"] = send_email
    return sinks


def headline(record: dict) -> str:
    return (f"[{record['severity'].upper()}] Millet {record['check']} on {record['dataset']} for "
            f"{record['logical_date']}: {record['summary']}")


def send_webhook(record: dict, settings: Settings) -> None:
    """POST a Slack-compatible message: `text` for people, the whole record under `millet` for machines."""
    lines = [headline(record)]
    if record["sample_keys"]:
        lines.append("sample: " + ", ".join(record["sample_keys"]))
    if record["report"]:
        lines.append(f"report: {record['report']}")
    body = json.dumps({"text": "\n".join(lines), "millet": record}).encode()
    request = urllib.request.Request(settings.alert_webhook_url.get_secret_value(), data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=settings.alert_timeout_s) as response:
        response.read()  # urlopen raises on 4xx/5xx: the alert stays queued


class SinkMisconfigured(Exception):
    """A sink's settings that no alert could go out with: the sink counts as down, its alerts wait."""


def send_email(record: dict, settings: Settings) -> None:
    _refuse_a_login_in_clear(settings)
    message = EmailMessage()
    message["Subject"] = " ".join(headline(record).split())  # a header is one line; an error's text is not
    message["From"] = settings.alert_email_from
    message["To"] = settings.alert_email_to
    message.set_content(json.dumps(record, indent=2))
    with smtplib.SMTP(settings.alert_smtp_host, settings.alert_smtp_port,
                      timeout=settings.alert_timeout_s) as smtp:
        if settings.alert_smtp_starttls:
            smtp.starttls()
        if settings.alert_smtp_user:
            smtp.login(settings.alert_smtp_user, settings.alert_smtp_password.get_secret_value())
        smtp.send_message(message)


def _refuse_a_login_in_clear(settings: Settings) -> None:
    """A login goes with its password, and only over STARTTLS: a password sent in clear is one anyone on
    the way can read, and a user or a password set alone would send the mail without logging in,
    unnoticed."""
    if bool(settings.alert_smtp_user) != (settings.alert_smtp_password is not None):
        raise SinkMisconfigured("MILLET_ALERT_SMTP_USER and MILLET_ALERT_SMTP_PASSWORD go together: one "
                                "is set without the other")
    if settings.alert_smtp_user and not settings.alert_smtp_starttls:
        raise SinkMisconfigured("an SMTP login without MILLET_ALERT_SMTP_STARTTLS=true would send the "
                                "password in clear text")


def task_failed(context) -> None:
    """Airflow's on_failure_callback for every task of the DAG: the failure goes to the same sinks."""
    from millet.settings import get_settings  # the task's settings, as its callable built them

    ti, error = context["ti"], context.get("exception")
    what = f"{type(error).__name__}: {error}" if error is not None else "failed"
    alert = Alert(severity="critical", check="task_failed", dataset=f"{ti.dag_id}.{ti.task_id}",
                  logical_date=str(context.get("ds")), summary=what[:1000],
                  counts={"try_number": getattr(ti, "try_number", None)},
                  report=str(report_path(str(context.get("ds")), get_settings())))
    try:
        raise_alerts([alert], get_settings())
    except Exception:  # a callback that raises changes nothing for the task; say so in its log
        log.exception("could not record the alert for the failure of %s", alert.dataset)
