"""Alerts reach real receivers on loopback (an HTTP webhook, an SMTP server); a sink that is down loses
nothing: the alert waits in the outbox and is delivered on the next run."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler

from millet.alerts import Alert, alert_log, deliver_pending, raise_alerts
from millet.settings import Settings
from tests.conftest import TEST_KEY
from tests.receivers import http_server, webhook_server


def _settings(tmp_path, **sinks) -> Settings:
    return Settings(data_root=tmp_path / "data", pseudonym_key=TEST_KEY.decode(), alert_timeout_s=5, **sinks)


def _alert(**changes) -> Alert:
    fields = dict(severity="critical", check="repayment_reconciliation", dataset="bank_repayments",
                  logical_date="2026-01-02", summary="12 repayments unconfirmed past the booking lag",
                  counts={"unmatched": 12}, sample_keys=["u1", "u2"], report="/reports/dt=2026-01-02.html")
    return Alert(**(fields | changes))


def test_an_alert_reaches_the_log_the_webhook_and_the_mailbox(tmp_path, webhook, mailbox):
    settings = _settings(tmp_path, alert_webhook_url=webhook.url, alert_smtp_host="127.0.0.1",
                         alert_smtp_port=mailbox.port, alert_email_to="oncall@lender.example")
    alert = _alert()

    assert raise_alerts([alert], settings) == {"webhook": 0, "email": 0}

    posted = webhook.next()
    assert posted["millet"]["id"] == alert.id and posted["millet"]["severity"] == "critical"
    assert posted["text"].startswith("[CRITICAL] Millet repayment_reconciliation on bank_repayments")
    assert "u1, u2" in posted["text"] and "/reports/dt=2026-01-02.html" in posted["text"]
    mail = mailbox.next()
    assert mail["To"] == "oncall@lender.example" and mail["Subject"].startswith("[CRITICAL]")
    assert json.loads(mail.get_payload())["counts"] == {"unmatched": 12}
    logged = [json.loads(line) for line in alert_log(settings).read_text().splitlines()]
    assert [r["id"] for r in logged] == [alert.id]


def test_an_smtp_login_goes_with_its_password_and_over_starttls_only(tmp_path, mailbox, caplog):
    """A user set without STARTTLS (the password would cross the network in clear), or a user or a
    password set alone (the mail would go out without the login, unnoticed): no mail is sent, the alert
    waits in the outbox, and the log says why. Mutations that fail it: either check removed (the login is
    tried in clear; STARTTLS is tried, and the mail sent without a login)."""
    refused = [(dict(alert_smtp_user="millet", alert_smtp_password="secret"), "in clear text"),
               (dict(alert_smtp_user="millet", alert_smtp_starttls=True), "one is set without the other"),
               (dict(alert_smtp_password="secret", alert_smtp_starttls=True), "one is set without the other")]
    for n, (smtp, why) in enumerate(refused):
        settings = _settings(tmp_path / str(n), alert_smtp_host="127.0.0.1", alert_smtp_port=mailbox.port,
                             alert_email_to="oncall@lender.example", **smtp)
        with caplog.at_level(logging.WARNING, logger="millet.alerts"):
            assert raise_alerts([_alert()], settings) == {"email": 1}
        assert why in caplog.text, caplog.text
        caplog.clear()
    assert mailbox.all() == []


def test_a_webhook_that_is_down_gets_the_alert_on_the_next_run(tmp_path):
    with webhook_server() as hook:
        url, port = hook.url, int(hook.url.split(":")[2].split("/")[0])
    settings = _settings(tmp_path, alert_webhook_url=url)  # nothing listens there now
    alert = _alert(severity="warning", check="snapshot_drift")

    assert raise_alerts([alert], settings) == {"webhook": 1}  # not delivered, and no exception
    assert json.loads(alert_log(settings).read_text())["id"] == alert.id  # logged all the same

    with webhook_server(port) as hook:  # the receiver is back for the next run
        assert deliver_pending(settings) == {"webhook": 0}
        assert hook.next()["millet"]["id"] == alert.id
        assert deliver_pending(settings) == {"webhook": 0}  # delivered once, not again
        assert hook.all() == []


def test_with_no_sink_configured_alerts_are_logged_only(tmp_path):
    settings = _settings(tmp_path)
    assert raise_alerts([_alert(), _alert(dataset="loans")], settings) == {}
    assert len(alert_log(settings).read_text().splitlines()) == 2


def test_the_same_finding_of_the_same_day_is_one_alert_however_often_the_day_is_re_run(tmp_path, webhook):
    """Mutation that fails it: every call logging and sending its alerts whatever the log holds."""
    settings = _settings(tmp_path, alert_webhook_url=webhook.url)
    alert, other = _alert(), _alert(summary="13 repayments unconfirmed past the booking lag")

    assert raise_alerts([alert], settings) == {"webhook": 0}
    assert raise_alerts([alert, other], settings) == {"webhook": 0}  # the day re-run: one finding changed

    assert [posted["millet"]["id"] for posted in (webhook.next(), webhook.next())] == [alert.id, other.id]
    assert webhook.all() == []
    assert [json.loads(line)["id"] for line in alert_log(settings).read_text().splitlines()] == [
        alert.id, other.id]


def test_two_deliverers_of_one_backlog_send_each_alert_once(tmp_path):
    """The night's two checks run in parallel, and each delivers what waits (here two threads, each with
    the locks' files open on its own, as two processes have them). Mutation that fails it: no lock around
    delivery (both send the backlog, and one fails on a file the other removed)."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    with webhook_server() as hook:
        url, port = hook.url, int(hook.url.split(":")[2].split("/")[0])
    settings = _settings(tmp_path, alert_webhook_url=url)  # down while the backlog builds up
    backlog = [_alert(dataset=f"feed_{n}") for n in range(20)]
    assert raise_alerts(backlog, settings) == {"webhook": 20}  # one failed try: the others not tried

    start = Barrier(2, timeout=30)

    def deliver() -> dict:
        start.wait()
        return deliver_pending(settings)

    with webhook_server(port) as hook, ThreadPoolExecutor(2) as pool:
        for job in [pool.submit(deliver), pool.submit(deliver)]:
            job.result(timeout=120)  # neither raises; the one that found the other delivering returned
        received = [hook.next()["millet"]["id"] for _ in backlog]
        assert deliver_pending(settings) == {"webhook": 0}
        assert hook.all() == []
    assert sorted(received) == sorted(alert.id for alert in backlog)


def test_an_alert_queued_while_another_process_delivers_is_delivered_by_it(tmp_path, webhook, monkeypatch):
    """The delivering process looks for new alerts before it lets go. Mutation that fails it: returning
    after one pass (the alert queued meanwhile waits for the next night)."""
    from millet import alerts

    settings = _settings(tmp_path, alert_webhook_url=webhook.url)
    first, queued_meanwhile = _alert(), _alert(dataset="loans")
    send, sent, meanwhile = alerts.send_webhook, [], []

    def send_and_meanwhile_another_raises(record, settings):
        send(record, settings)
        sent.append(record["id"])
        if len(sent) == 1:  # the other check's alert, while this process delivers: it returns at once
            meanwhile.append(raise_alerts([queued_meanwhile], settings))

    monkeypatch.setattr(alerts, "_sinks", lambda settings: {"webhook": send_and_meanwhile_another_raises})
    assert raise_alerts([first], settings) == {"webhook": 0}
    assert meanwhile == [{"webhook": 2}]  # waiting then: the alert being sent, and its own
    assert sent == [first.id, queued_meanwhile.id]
    assert [webhook.next()["millet"]["id"] for _ in sent] == sent


def test_an_alert_a_sink_refuses_does_not_hold_back_the_others(tmp_path, mailbox):
    """A webhook that answers 400 to one alert, and a task's error of several lines (not a valid e-mail
    subject as it stands): every other alert still goes, and that one by e-mail. Mutations that fail it:
    a sink taken for down on any failure; the subject left with its line breaks."""
    taken = []

    class RefusesOne(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            refused = body["millet"]["dataset"] == "refused"
            if not refused:
                taken.append(body["millet"]["id"])
            self.send_response(400 if refused else 200)
            self.end_headers()

        def log_message(self, *args):
            pass

    with http_server(RefusesOne) as url:
        settings = _settings(tmp_path, alert_webhook_url=f"{url}/hook", alert_smtp_host="127.0.0.1",
                             alert_smtp_port=mailbox.port, alert_email_to="oncall@lender.example")
        refused = _alert(dataset="refused", check="task_failed",
                         summary="BinderException: Binder Error: no column\n\nLINE 1: select x")
        assert raise_alerts([refused], settings) == {"webhook": 1, "email": 0}
        later = _alert(dataset="loans")
        assert raise_alerts([later], settings) == {"webhook": 1, "email": 0}
    assert taken == [later.id]
    subjects = [mail["Subject"] for mail in (mailbox.next(), mailbox.next())]
    assert subjects[0].endswith("Binder Error: no column LINE 1: select x"), subjects
    assert mailbox.all() == []


def test_a_log_line_cut_short_by_a_killed_process_costs_no_other_alert(tmp_path):
    from millet.alerts import logged_alerts

    settings = _settings(tmp_path)
    first = _alert()
    raise_alerts([first], settings)
    with alert_log(settings).open("a") as log:
        log.write('{"id": "0123456789abcdef", "severity": "crit')  # killed mid-write
    second = _alert(dataset="loans")
    raise_alerts([second], settings)
    assert [r["id"] for r in logged_alerts(settings)] == [first.id, second.id]
    raise_alerts([second], settings)  # seen in the log: not again
    assert [r["id"] for r in logged_alerts(settings)] == [first.id, second.id]


def test_a_finding_that_became_critical_is_a_new_alert(tmp_path, webhook):
    """Mutation that fails it: an alert's id without its severity (the escalation deduplicated away)."""
    settings = _settings(tmp_path, alert_webhook_url=webhook.url)
    raise_alerts([_alert(severity="warning")], settings)
    raise_alerts([_alert(severity="critical")], settings)
    assert [webhook.next()["millet"]["severity"] for _ in range(2)] == ["warning", "critical"]


def test_a_receiver_that_answers_a_byte_at_a_time_is_given_up_after_the_timeout(tmp_path):
    """Each byte of its answer comes within the socket's timeout, so without a bound on the whole send the
    night's alerting (and a failing task's callback) would wait for as long as it drips. Mutation that
    fails it: the send not bounded in all (the answer ends, 200, and the alert is taken as delivered)."""
    stop, answered = threading.Event(), threading.Event()

    class Drips(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            for _ in range(60):  # 12 s of answer, a byte every 0.2 s: each read well within the timeout
                if stop.wait(0.2):  # the pace of the answer, not synchronisation
                    return
                self.wfile.write(b"x")
                self.wfile.flush()
            self.wfile.write(b"\r\nContent-Length: 0\r\n\r\n")
            answered.set()

        def log_message(self, *args):
            pass

    try:
        with http_server(Drips) as url:
            settings = _settings(tmp_path, alert_webhook_url=f"{url}/hook").model_copy(
                update={"alert_timeout_s": 1.0})
            alert = _alert()
            assert raise_alerts([alert], settings) == {"webhook": 1}
            assert not answered.is_set()  # given up while it was still answering: the alert still waits
    finally:
        stop.set()
