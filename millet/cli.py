"""The `millet` command: what a person does by hand."""

from __future__ import annotations

import json
import os
import sys
from datetime import date, timedelta
from http.server import SimpleHTTPRequestHandler
from pathlib import Path
from typing import Annotated

import typer

from millet.serving.store import DEFAULT_SERVICE
from millet.settings import get_settings

app = typer.Typer(help="Millet: a feature store for consumer-credit risk.", no_args_is_help=True,
                  pretty_exceptions_enable=False)


def _fail(message: str) -> None:
    typer.secho(f"millet: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


@app.command()
def simulate(
    users: Annotated[int, typer.Option(help="How many ecosystem users.")] = 2_000,
    days: Annotated[int | None, typer.Option(help="How many daily drops (default: the demo's, "
                                                  "MILLET_DEMO_DAYS).")] = None,
    start: Annotated[str | None, typer.Option(help="First day, YYYY-MM-DD (default: the demo's, "
                                                   "MILLET_DEMO_START).")] = None,
    seed: Annotated[int | None, typer.Option(help="Same seed, same bytes (default: MILLET_SEED).")] = None,
    faults: Annotated[bool, typer.Option(help="Inject a real feed's faults at realistic rates.")] = True,
) -> None:
    """Write simulated daily log drops into the landing zone, and the ground truth beside it."""
    from millet.simulate import simulate as run_simulation
    from millet.simulate.faults import Faults

    settings = get_settings()
    first = _date(start) if start else settings.demo_start
    chosen = Faults.realistic(first) if faults else Faults()
    days = settings.demo_days if days is None else days
    seed = settings.seed if seed is None else seed
    files = run_simulation(settings.landing_dir, users=users, days=days, start=first, seed=seed,
                           faults=chosen, truth_dir=settings.truth_dir, progress=sys.stderr.isatty())
    typer.echo(f"wrote {len(files)} files under {settings.landing_dir}; truth under {settings.truth_dir}")


@app.command(name="contracts")
def show_contracts(
    dbt_sources: Annotated[bool, typer.Option(help="Print dbt's bronze sources YAML instead.")] = False,
) -> None:
    """Print the landing contracts as Markdown (docs/contracts.md), or as dbt's bronze sources."""
    from millet.contracts.dbt_sources import dbt_sources_yaml
    from millet.contracts.docs import contracts_markdown

    typer.echo(dbt_sources_yaml() if dbt_sources else contracts_markdown(), nl=False)


@app.command()
def run(
    date_: Annotated[str, typer.Option("--date", help="Logical date, YYYY-MM-DD.")],
    rebase: Annotated[bool, typer.Option(help="Rebuild the carried state (windows, loan book) from history "
                                              "and compare it with the rolled one.")] = False,
) -> None:
    """One run of the millet_nightly DAG through Airflow for a logical date."""
    from millet.transform.dbt import dbt_log_path

    settings, day = get_settings(), _date(date_)
    _night(day, settings, rebase=rebase)
    typer.echo(f"dbt's log: {dbt_log_path(settings)}")


def _night(day: date, settings, rebase: bool = False) -> None:
    """Run the night, then print one line for it and one per stage; on failure, where to look."""
    import time

    from millet.alerts import alert_log, report_path
    from millet.orchestrate import DagRunFailed, run_dag, run_log
    from millet.reporting import night_lines

    started = time.monotonic()
    try:
        run_dag(day, settings, rebase=rebase)
    except DagRunFailed as exc:
        _fail(f"{exc}\nquality report: {report_path(str(day), settings)}; alerts: {alert_log(settings)}")
    typer.echo(f"millet_nightly {day}: success in {time.monotonic() - started:.0f} s; log (Airflow and "
               f"the tasks: GX, Feast): {run_log(day, settings)}")
    for line in night_lines(day, settings):
        typer.echo(line)


@app.command()
def backfill(
    start: Annotated[str, typer.Option(help="First logical date, YYYY-MM-DD.")],
    end: Annotated[str, typer.Option(help="Last logical date, YYYY-MM-DD (inclusive).")],
    reprocess: Annotated[str, typer.Option(help="Re-run days run before: failed, completed.")] = "failed",
    one_pass: Annotated[bool, typer.Option(help="Build every day's snapshot in one pass (one ingestion of "
                                                "the range, one dbt build), not a DAG run per day; then "
                                                "check and publish the last day.")] = False,
) -> None:
    """Airflow's backfill of millet_nightly over a date range: a run per day, in order, by a scheduler;
    or, with --one-pass, the history that model training needs, built at once."""
    from millet.airflow_services import ServiceDied
    from millet.orchestrate import NOT_RUN, DagRunFailed
    from millet.orchestrate import backfill as run_backfill

    if reprocess not in ("failed", "completed"):
        _fail(f"--reprocess {reprocess!r}: use failed (re-run failed days only) or completed (all days)")
    first, last = _date(start), _date(end)
    if last < first:
        _fail(f"--end {last} is before --start {first}")
    if one_pass:
        _history(first, last)
        return
    try:
        outcome = run_backfill(first, last, reprocess=reprocess)
    except (DagRunFailed, ServiceDied) as exc:
        _fail(str(exc))
    for day, state in outcome.items():
        typer.echo(f"{day}: {state}")
    if any(state.startswith("failed") for state in outcome.values()):
        _fail("some days failed (above: the task and its log); the days after a failed day do not run")
    if any(state.startswith(NOT_RUN) for state in outcome.values()):
        _fail("some days were not run (above: why)")


def _history(first: date, last: date) -> None:
    from millet.alerts import alert_log
    from millet.orchestrate import history, history_log
    from millet.quality.checkpoint import QualityGateFailed
    from millet.quality.reconcile import ReconciliationFailed
    from millet.transform import TransformFailed

    settings = get_settings()
    days = (last - first).days + 1

    def stage_done(name: str, seconds: float, result) -> None:
        span = f"{days} days" if name in ("ingest", "build") else str(last)  # the rest: the last day's
        made = "; ".join(f"{lst} {'written' if isinstance(out, dict) else out}"
                         for lst, out in result.items()) if name == "lists" else ""
        typer.echo(f"{name}: {span} in {seconds:.1f} s" + (f" ({made})" if made else ""))

    log = history_log(first, last, settings)
    try:
        history(first, last, settings, on_stage=stage_done)
    except (TransformFailed, QualityGateFailed, ReconciliationFailed) as exc:
        _fail(f"{exc}\nalerts: {alert_log(settings)}; log (dbt, GX, Feast): {log}")
    typer.echo(f"snapshots {first} to {last}: {settings.snapshots_dir}; log (dbt, GX, Feast): {log}")


@app.command()
def world(
    users: Annotated[int, typer.Option(help="How many ecosystem users.")] = 20_000,
    days: Annotated[int, typer.Option(help="Days of history.")] = 300,
    start: Annotated[str | None, typer.Option(help="First day, YYYY-MM-DD (default: the demo's, "
                                                   "MILLET_DEMO_START).")] = None,
    seed: Annotated[int | None, typer.Option(help="Same seed, same world (default: MILLET_SEED).")] = None,
) -> None:
    """A world to train models on: `days` of simulated history (no injected faults), ingested and built
    into every daily snapshot in one pass."""
    first = _date(start) if start else get_settings().demo_start
    simulate(users=users, days=days, start=str(first), seed=seed, faults=False)
    _history(first, first + timedelta(days=days - 1))


@app.command()
def train() -> None:
    """Train the models from the store: credit risk (credit_risk_v1, tested out of time against the oracle)
    and financial demand (financial_demand_v1); each new version is served only if it passes."""
    from millet.scoring.credit_risk import LeakageSuspected, train_credit_risk
    from millet.scoring.demand import train_demand
    from millet.scoring.labels import ORACLE, NoLabels
    from millet.scoring.repayment import check_repayment_ability

    settings = get_settings()
    try:
        risk = train_credit_risk(settings)
        ability = check_repayment_ability(settings)
        demand = train_demand(settings)
    except (NoLabels, LeakageSuspected) as exc:
        _fail(str(exc))
    rows, test = risk["rows"], risk["test"]
    typer.echo(f"{risk['model']} {risk['version']}: {risk['features']} features ({risk['feature_service']}); "
               f"trained on {rows['train']['rows']:,} loans ({rows['train']['defaults']:,} defaults), tested "
               f"out of time on {rows['test']['rows']:,} ({rows['test']['defaults']:,} defaults)")
    for name, label in (("gbm", "LightGBM"), ("scorecard", "scorecard"),
                        ("credit_history_only", "credit history alone"), (ORACLE, "oracle (true PD)")):
        typer.echo(f"  {label:<22} AUC {test[name]['auc']:.4f}  Gini {test[name]['gini']:.4f}  "
                   f"KS {test[name]['ks']:.4f}")
    typer.echo(f"  model AUC ÷ oracle AUC = {risk['oracle_ratio']:.3f}; score PSI train → test "
               f"{risk['score_psi']:.3f}")
    typer.echo(f"  report: {risk['report']}")
    check = ability["check"]
    typer.echo(f"{ability['model']} {ability['version']} (rules over {ability['feature_service']}): of "
               f"{check['loans']:,} loans repaid at least once, {check['within_capacity_share']:.1%} had a "
               "first instalment within the capacity computed at application; default rate within "
               f"{_share(check['default_rate_within'])}, beyond {_share(check['default_rate_beyond'])}")
    rows, test = demand["rows"], demand["test"]
    typer.echo(f"{demand['model']} {demand['version']}: {demand['features']} features "
               f"({demand['feature_service']}); {rows['test']['rows']:,} test rows, "
               f"{rows['test']['positives']:,} applied within 30 days: AUC {test['auc']:.4f}, "
               f"top-decile lift {test['top_decile_lift']:.2f}")
    failed = [f"{m['model']}: " + "; ".join(m["reasons"]) for m in (risk, demand) if not m["passed"]]
    if failed:
        _fail("not served: " + " | ".join(failed))
    typer.echo(f"served: {risk['model']} {risk['version']}, {demand['model']} {demand['version']}")


@app.command()
def features(
    user_key: Annotated[str, typer.Argument(help="The pseudonymous user_key.")],
    service: Annotated[str, typer.Option(help="Feast feature service.")] = DEFAULT_SERVICE,
) -> None:
    """Look a user's features up in the online store; prints JSON."""
    from millet.serving import online_features

    try:
        values = online_features(user_key, service)
    except Exception as exc:  # Feast raises many types; the user needs the message, not a traceback
        _fail(f"online lookup failed ({type(exc).__name__}: {exc}); has `millet run` published features?")
    if all(v is None for k, v in values.items() if k != "user_key"):
        _fail(f"no features online for user_key {user_key!r}")
    typer.echo(json.dumps(values, indent=2, sort_keys=True))


@app.command(name="training-set")
def training_set_command(
    labels: Annotated[str, typer.Option(help="Parquet or CSV of user_key, event_timestamp (or timestamp), "
                                              "label columns.")],
    out: Annotated[str | None, typer.Option(help="Where to write the training frame (Parquet); default "
                                              "training/<service>.parquet under the data root, where an "
                                              "erasure finds it.")] = None,
    service: Annotated[str, typer.Option(help="Feast feature service.")] = DEFAULT_SERVICE,
) -> None:
    """A point-in-time-correct training frame: each label row with the features known at its timestamp."""
    import pyarrow.parquet as pq

    from millet.files import replacing
    from millet.serving.offline.training import BadLabels, training_table

    try:
        table = training_table(labels, service)
    except BadLabels as exc:
        _fail(str(exc))
    if out is None:
        out = get_settings().training_dir / f"{service}.parquet"
        out.parent.mkdir(parents=True, exist_ok=True)
    with replacing(Path(out)) as copy:
        pq.write_table(table, copy)
    typer.echo(f"wrote {out}: {table.num_rows:,} label rows × {table.num_columns - 2:,} columns ({service})")


@app.command()
def forget(
    account_id: Annotated[list[str], typer.Option("--account-id",
                                                  help="A raw account id (repeat for more).")],
) -> None:
    """Queue people's erasure for the next nightly run (the account ids are hashed before anything is
    written); prints each user_key."""
    from millet.privacy.erasure import forget as queue

    settings = get_settings()
    try:
        keys = queue(account_id, settings)
    except ValueError as exc:
        _fail(str(exc))
    for key in keys:
        typer.echo(key)
    typer.echo(f"queued under {settings.erasure_dir / 'requests'}: erased from every zone by the next "
               "nightly run (see README, Security and privacy)", err=True)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def feast(ctx: typer.Context) -> None:
    """Feast's own CLI on the feature repository, configured from the settings in force (data root,
    online store): `millet feast feature-services list`, `millet feast ui`. In features/ with the default
    settings, plain `feast` does the same."""
    import subprocess

    command, env = _feast_command(get_settings(), ctx.args)
    raise typer.Exit(subprocess.run(command, env=env).returncode)


def _feast_command(settings, args: list[str]) -> tuple[list[str], dict[str, str]]:
    """Feast's CLI with Millet's configuration for these settings, and the environment to run it in."""
    from millet.serving.store import feature_store_yaml

    settings.feast_dir.mkdir(parents=True, exist_ok=True)
    config = settings.feast_dir / "feature_store.yaml"
    config.write_text(feature_store_yaml(settings, relative=False))
    command = [str(Path(sys.executable).with_name("feast")), "-c", str(settings.feature_repo_dir),
               "-f", str(config), *args]
    # The repository's definitions read the settings as MILLET_* variables, as Airflow's tasks do.
    return command, {**os.environ, **settings.environ(), **settings.millet_environ()}


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def airflow(ctx: typer.Context) -> None:
    """Airflow's own CLI on Millet's Airflow home, metadata database and DAG: `millet airflow dags list-runs
    millet_nightly`; `millet airflow standalone` opens Airflow's UI (http://localhost:8080) on the runs made
    so far (its admin password is printed and kept in the Airflow home)."""
    import subprocess

    settings = get_settings()
    env = settings.airflow_process_environ(dict(os.environ))
    bin_dir = str(Path(sys.executable).parent)  # `standalone` starts its services as `airflow` from PATH
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    command = [str(Path(bin_dir) / "airflow"), *ctx.args]
    raise typer.Exit(subprocess.run(command, env=env).returncode)


@app.command()
def status() -> None:
    """Where things stand: the last runs, each feed's freshness, the latest night's alerts, and which day
    the online store serves."""
    from millet.orchestrate import output_to
    from millet.reporting import status_lines

    settings = get_settings()
    log = settings.logs_dir / "status.log"
    with output_to(log):  # Airflow's and Feast's own messages, as they open their stores
        lines = status_lines(settings)
    for line in lines:
        typer.echo(line)
    typer.echo(f"(Airflow's and Feast's messages: {log})")


@app.command()
def docs(
    serve_: Annotated[bool, typer.Option("--serve", help="Then serve dbt's docs and run Feast's UI on "
                                                         "loopback until interrupted.")] = False,
    port: Annotated[int, typer.Option(help="dbt docs' port, with --serve.")] = 8580,
    feast_port: Annotated[int, typer.Option(help="Feast UI's port, with --serve.")] = 8888,
) -> None:
    """The catalog: dbt's docs (lineage from the bronze sources to the feature marts, every column) and
    Feast's UI (feature views, services, the spec's tags and descriptions)."""
    from datetime import UTC, datetime

    from millet.transform.dbt import build_docs, dbt_log_path, latest_build

    settings = get_settings()
    day = latest_build(datetime.now(UTC).date(), settings)
    if day is None:
        _fail("nothing built yet: run `make demo` or `millet run --date ...` first")
    page = build_docs(day, settings)
    typer.echo(f"dbt docs (as of {day}): {page}; dbt's log: {dbt_log_path(settings)}")
    if not serve_:
        typer.echo("Feast UI: `millet feast ui` (or `feast ui` in features/ at the default settings); "
                   "both at once: `millet docs --serve`")
        return
    _serve_catalog(settings, page, port, feast_port)


def _serve_catalog(settings, page: Path, port: int, feast_port: int) -> None:
    import functools
    import signal
    import subprocess
    import threading
    from http.server import ThreadingHTTPServer

    command, env = _feast_command(settings, ["ui", "--host", "127.0.0.1", "--port", str(feast_port)])
    log = settings.docs_dir / "feast-ui.log"
    handler = functools.partial(_QuietHandler, directory=str(page.parent))
    signal.signal(signal.SIGTERM, _exit_on_sigterm)  # a service manager's stop still stops Feast's UI
    with ThreadingHTTPServer(("127.0.0.1", port), handler) as server, open(log, "ab") as out:
        ui = subprocess.Popen(command, env=env, stdout=out, stderr=out, cwd=settings.feature_repo_dir)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        typer.echo(f"dbt docs: http://127.0.0.1:{port}/{page.name}\n"
                   f"Feast UI: http://127.0.0.1:{feast_port}/ (log: {log}); Ctrl-C stops both")
        try:
            ui.wait()
        except (KeyboardInterrupt, SystemExit):
            pass
        finally:
            ui.terminate()
            try:
                ui.wait(timeout=30)
            except subprocess.TimeoutExpired:
                ui.kill()
                ui.wait()
            server.shutdown()
    if ui.returncode not in (0, -15):
        _fail(f"the Feast UI exited ({ui.returncode}); see {log}")


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's name
        pass  # a line per request would bury the two addresses a person needs


@app.command(name="rotate-key")
def rotate_key_command() -> None:
    """Add a new pseudonymisation key to the chain and re-key everything stored with it (stop the
    scheduler and the feature server first). Run it again to finish one that was interrupted."""
    from millet.privacy.rotation import rotate_key

    settings = get_settings()
    try:
        done = rotate_key(settings)
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    republished = done["republished_day"] or "nothing published yet"
    typer.echo(f"rotated: {done['files']:,} files and {done['warehouse_tables']} warehouse tables re-keyed, "
               f"online store republished ({republished}), {done['keys_in_chain']} keys in "
               f"{settings.keyring_path}, {done['seconds']} s")


@app.command()
def serve(
    port: Annotated[int, typer.Option(help="TCP port.")] = 6566,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
) -> None:
    """Serve online features over HTTP with Feast's REST API (POST /get-online-features, GET /health)."""
    from millet.serving import open_store
    from millet.serving.api.auth import check_exposure
    from millet.serving.api.server import serve as run_server

    settings = get_settings()
    try:
        check_exposure(settings, host)
    except ValueError as exc:
        _fail(str(exc))
    auth = "OIDC bearer tokens" if settings.serve_auth == "oidc" else "no authentication (loopback only)"
    typer.echo(f"serving online features on http://{host}:{port} (Feast REST API; {auth}; audit log "
               f"{settings.audit_log_path})", err=True)
    run_server(open_store(settings), settings, host=host, port=port)


def _share(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate:.2%}"


@app.command()
def score(
    user_key: Annotated[str, typer.Argument(help="The pseudonymous user_key.")],
) -> None:
    """The credit decision for a user from the online store, as `POST /score` gives it; prints JSON."""
    from millet.scoring.registry import NoModel
    from millet.serving import open_store
    from millet.serving.api.server import OnlineReader, Scorer

    settings = get_settings()
    try:
        decision = Scorer(OnlineReader(open_store(settings)), settings).score(user_key)
    except NoModel as exc:
        _fail(str(exc))
    typer.echo(json.dumps(decision.to_dict(), indent=2))


@app.command()
def demo() -> None:
    """Simulate a small ecosystem, run the nightly DAG for consecutive days, show one borrower."""
    from millet.orchestrate import output_to
    from millet.reporting import profile_lines, sample_borrower
    from millet.simulate import simulate as run_simulation
    from millet.simulate.faults import Faults
    from millet.transform.dbt import dbt_log_path

    # The demo fails fast rather than sit out retry delays, unless told otherwise.
    settings = get_settings()
    if "task_retries" not in settings.model_fields_set:
        settings = settings.model_copy(update={"task_retries": 0})
    days = [settings.demo_start + timedelta(days=i) for i in range(settings.demo_days)]
    files = run_simulation(settings.landing_dir, users=settings.demo_users, days=len(days), start=days[0],
                           seed=settings.seed, faults=Faults.realistic(days[0]), truth_dir=settings.truth_dir)
    typer.echo(f"simulated {settings.demo_users:,} users, {days[0]} to {days[-1]}: {len(files)} log drops "
               f"under {settings.landing_dir}, with a real feed's faults")
    for day in days:
        _night(day, settings)
    typer.echo(f"dbt's log: {dbt_log_path(settings)}")
    log = settings.logs_dir / "demo.log"
    # Feast's own messages as it opens its store: the nights ran Airflow in this process, whose logging
    # prints every library's records to the console from then on.
    with output_to(log):
        borrower = sample_borrower(days[-1], settings)
        lines = profile_lines(borrower, settings)
    typer.secho(f"a sample borrower, as served online on {days[-1]} (Feast's messages: {log}):", bold=True)
    for line in lines:
        typer.echo(line)
    typer.echo(f"all of its features: millet features {borrower}; the catalog: millet docs --serve; "
               "every command: millet --help")


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        _fail(f"{text!r} is not a date; use YYYY-MM-DD")

