"""One typed Settings object that every stage reads; every path derives from it.

Values come from arguments and `MILLET_*` environment variables. dbt, Feast and
Airflow never read these variables themselves: `Settings.environ()` exports what each
tool needs, so a path is spelled in exactly one place.
"""

from __future__ import annotations

import os
import secrets
from datetime import date
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from millet.files import write_bytes

if TYPE_CHECKING:
    from millet.ingest.pseudonymise import KeyChain

REPO_ROOT = Path(__file__).resolve().parent.parent
DATABASE_CONNECT_TIMEOUT_S = 10
# Airflow's services and Millet's own process write one SQLite file; a writer waits this long for
# another's lock (SQLite's default, 5 s, is short for a scheduler loop on a busy two-core machine).
SQLITE_BUSY_TIMEOUT_S = 60


class Settings(BaseSettings):
    # Only the environment and the arguments: no .env file (Compose's holds its secrets for Compose). An
    # empty variable is unset, not '': Compose passes an optional value left blank in .env as one.
    model_config = SettingsConfigDict(env_prefix="MILLET_", env_ignore_empty=True, extra="ignore")

    data_root: Path = Field(
        Path(".millet"),
        description="Landing, bronze, warehouse, snapshots, stores. A relative path is taken from the "
        "repository root, never from the working directory (tools such as Feast change it).",
    )
    secrets_dir: Path = Field(
        Path.home() / ".config" / "millet",
        description="Where the demo keeps its generated pseudonymisation key; outside the repo on purpose.",
    )
    pseudonym_key: SecretStr | None = Field(
        None, description="HMAC key for user_key; when unset, the keys are the keyring file "
        "secrets_dir/pseudonym.key (created with a random key; `millet rotate-key` adds to it)."
    )
    online_store: Literal["sqlite", "redis"] = "sqlite"
    redis_url: str = "127.0.0.1:6379,db=0"
    project: str = Field("millet", description="Feast project name; also the Redis key namespace.")
    feast_registry_url: str | None = Field(
        None, description="Feast's registry in a SQL database (SQLAlchemy URL), e.g. "
        "postgresql+psycopg://millet@db:5432/feast, shared by every host that serves or publishes; unset: "
        "a file, feast/registry.db under the data root.")

    # ---- the feature server's security (millet/serving/api/auth.py) ----
    serve_auth: Literal["oidc", "none"] = Field(
        "oidc", description="`millet serve` answers only requests with a bearer token from this OIDC "
        "provider, each reading only what its roles are granted (features/permissions.py). `none`: no "
        "token asked, every read allowed; refused on any interface but loopback.")
    oidc_discovery_url: str | None = Field(
        None, description="The provider's discovery document (…/.well-known/openid-configuration); its "
        "`jwks_uri` holds the keys tokens are verified with.")
    oidc_client_id: str = Field(
        "millet", description="Roles are read from the token's `roles` claim and from "
        "`resource_access.<this>.roles` (Keycloak's shape).")
    oidc_audience: str | None = Field(None, description="When set, a token's `aud` must be this.")
    oidc_issuer: str | None = Field(None, description="When set, a token's `iss` must be this.")

    demo_start: date = date(2026, 1, 1)
    demo_days: int = 2
    demo_users: int = Field(
        60_000, description="Enough that the last snapshot holds over 3·10^7 feature values.")
    seed: int = 7

    task_retries: int = Field(2, description="Airflow retries per task (0 in tests: fail fast).")
    task_retry_delay_s: int = 300
    airflow_log_level: str = "INFO"
    airflow_database_url: str | None = Field(
        None, description="Airflow's metadata database (SQLAlchemy URL), e.g. "
        "postgresql+psycopg://postgres@127.0.0.1:5432/airflow (psycopg 3, installed); unset: SQLite "
        "under the Airflow home.")
    airflow_parallelism: int = Field(
        default_factory=lambda: max(2, os.cpu_count() or 2),
        description="Task processes the scheduler's LocalExecutor runs at once (one per core).")
    task_start_timeout_s: int = Field(
        300, description="A task queued this long without starting is failed (then retried by its retries).")
    task_heartbeat_timeout_s: int = Field(
        300, description="A running task silent this long is failed (then retried by its retries).")
    task_timeout_s: int = Field(
        3 * 3600, description="A task running longer than this is failed (Airflow's execution_timeout).")
    backfill_timeout_s: int = Field(
        6 * 3600, description="`millet backfill` gives up, cancels and stops its services after this long.")
    backfill_stall_s: int = Field(
        900, description="`millet backfill` gives up when no task of it has changed state for this long.")

    dedupe_lookback_days: int = Field(
        7, description="How far back ingestion looks for re-sent events (at-least-once delivery)."
    )
    max_event_lateness_days: int = Field(
        400, description="An event stamped more than this many days before its drop closed is "
        "quarantined as stale_timestamp (a clock reset to 1900, a replayed archive)."
    )

    landing_retention_days: int = Field(
        30, ge=0, description="Landing drops (raw identifiers as delivered) older than this many days "
        "before the night's date are deleted by that night's run; long enough to re-run a recent night. "
        "0 keeps every drop.")
    quarantine_retention_days: int = Field(
        30, ge=0, description="Quarantined lines (identifiers masked, unparseable lines sealed) older than "
        "this many days before the night's date are deleted by that night's run; 0 keeps them all.")
    snapshot_retention_days: int = Field(
        730, description="Feature snapshots older than this many days before the latest successful build "
        "(on or before the as-of date) are deleted after a build, so a mistyped date deletes no history "
        "(training sets need it: keep it long); 0 keeps every snapshot."
    )
    rebase_every_days: int = Field(
        7, description="Every this many days (as-of days whose ordinal is a multiple of it) the nightly "
        "build rebuilds every window from the daily partials instead of rolling yesterday's state forward, "
        "and compares the two (a warning alert on any difference); 0: only on demand (`millet run --rebase`) "
        "and when yesterday's state is missing.")
    state_user_slices: int = Field(
        1, ge=1, description="Each rolling window state model runs as this many queries, one per range of "
        "user keys, whose files are then concatenated: the same rows with about 1/N of the memory. 1 at "
        "demo scale; about one slice per 150,000 users where a re-base of the widest state would "
        "otherwise spill to disk.")
    state_retention_days: int = Field(
        7, ge=0, description="Rolling window state files older than this many days before the as-of day are "
        "deleted after a build: only yesterday's is read; a week lets a recent night be re-run without a "
        "re-base.")
    # ---- alerts: always to alerts/alerts.jsonl under the data root; also to each sink set here ----
    alert_webhook_url: SecretStr | None = Field(
        None, description="Slack-compatible incoming webhook (JSON with `text`); it carries a token, so "
        "set it in the environment (MILLET_ALERT_WEBHOOK_URL), not in a file.")
    alert_smtp_host: str | None = Field(None, description="SMTP server for alert e-mail; unset: no e-mail.")
    alert_smtp_port: int = 25
    alert_smtp_starttls: bool = False
    alert_smtp_user: str | None = Field(None, description="Log in as this user, with the password, over "
                                        "STARTTLS only (alerts wait in the outbox otherwise).")
    alert_smtp_password: SecretStr | None = Field(None, description="From the environment only.")
    alert_email_from: str = "millet@localhost"
    alert_email_to: str = Field("", description="Comma-separated recipients of alert e-mail.")
    alert_timeout_s: float = Field(
        10, description="A sink that has not taken an alert in this long, from looking up its name to its "
        "answer, is down: its alerts wait in the outbox for the next run.")

    bank_booking_lag_days: int = Field(
        2, description="The funding bank books a repayment up to this many days after the app recorded it; "
        "a repayment older than this that the bank has not booked fails the reconciliation (critical).")
    expectations_dir: Path = Field(
        REPO_ROOT / "expectations", description="The data-quality thresholds (features.yml, feeds.yml): "
        "the repository's own unless a team keeps its own copy.")
    drift_baseline_date: date | None = Field(
        None, description="Feature drift is measured against this day's snapshot; unset, against the latest "
        "snapshot before the day checked (thresholds: expectations/features.yml)."
    )
    model_test_share: float = Field(
        0.3, gt=0, lt=1, description="The latest share of rows (whole days, by timestamp) held out as the "
        "models' out-of-time test; the model learns from the earlier ones.")
    model_warmup_days: int = Field(
        30, ge=0, description="Models' label rows begin this many days after the first snapshot: before it, "
        "the windows have too little history to be what they will be later.")
    model_min_oracle_ratio: float = Field(
        0.9, ge=0, le=1, description="A credit-risk model is served only if its out-of-time AUC is at least "
        "this share of the oracle's (the simulator's true PD on the same rows), and no score it fits is "
        "above the oracle's by more than chance allows (leakage).")
    # ---- pricing (../shared/DOMAIN.md: cost of funds + expected loss + operating cost + margin) ----
    pricing_lgd: float = Field(0.6, gt=0, le=1, description="Loss given default: the share of a defaulted "
                               "loan that is never recovered.")
    pricing_cost_of_funds: float = Field(0.06, ge=0, description="What the funding bank charges, a year.")
    pricing_operating_cost: float = Field(0.04, ge=0, description="Servicing and collections, a year.")
    pricing_margin: float = Field(0.03, ge=0, description="The lender's margin, a year.")
    pricing_rate_cap: float = Field(0.36, gt=0, description="The product's highest rate, a year; an "
                                    "applicant whose risk-based price exceeds it is declined.")
    pricing_band_step: float = Field(0.02, gt=0, description="Prices are rounded up to bands this wide.")
    # ---- credit line (../shared/DOMAIN.md: repayment capacity, capped by product rules) ----
    line_debt_service_ratio: float = Field(
        0.35, gt=0, le=1, description="The share of a user's monthly wallet spending (the income proxy) that "
        "all their instalments together may take.")
    line_term_months: int = Field(
        12, ge=1, description="The line is the principal whose monthly instalments over this many months, at "
        "the user's price, fit the affordable instalment.")
    line_reference_pd: float = Field(
        0.03, gt=0, lt=1, description="Dollars at risk: above this PD the line shrinks so that line × PD "
        "stays what it is at this PD (the portfolio's default rate).")
    line_first_loan_share: float = Field(
        0.5, gt=0, le=1, description="A borrower who has not yet paid off a loan gets this share of the "
        "line.")
    # ---- tracking and pre-approval (the nightly lists) ----
    tracking_riskiest: int = Field(
        100, ge=1, description="The early-warning list holds this many borrowers with an open loan of the "
        "highest PD, and as many of the largest rise in PD since their last application.")
    pre_approval_share: float = Field(
        1 / 6, gt=0, le=1, description="The share of the day's users pre-approved: those most likely to "
        "apply (the demand model) among those the credit decision would approve (../shared/DOMAIN.md: about "
        "one sixth of the ecosystem was pre-approved).")
    duckdb_memory_limit: str = "4GB"
    duckdb_threads: int = 2
    duckdb_disabled_optimizers: str = Field(
        "compressed_materialization",
        description="DuckDB 2.0.0's compressed materialization returned wrong sums in the feature marts "
        "(a 180-day count of 179 came out as -77, an 8-bit wrap-around); off in every Millet connection.",
    )
    ingest_memory_limit: str = Field(
        "2GB", description="DuckDB's memory for one channel-day's ingestion; beyond it, it spills to scratch."
    )

    # ---- paths, all under data_root ---------------------------------------------------
    @property
    def root(self) -> Path:
        return (REPO_ROOT / self.data_root).resolve()

    @property
    def landing_dir(self) -> Path:
        return self.root / "landing"

    @property
    def bronze_dir(self) -> Path:
        return self.root / "bronze"

    @property
    def quarantine_dir(self) -> Path:
        return self.root / "quarantine"

    @property
    def manifests_dir(self) -> Path:
        return self.root / "manifests"

    def ingest_manifest_path(self, channel: str, day) -> Path:
        """What ingestion did with a channel's drop of a day: lines in, rows out, quarantined, ..."""
        return self.manifests_dir / "ingest" / channel / f"dt={day}.json"

    @property
    def scratch_dir(self) -> Path:
        """Spill space for DuckDB; nothing there outlives the run that wrote it."""
        return self.root / "scratch"

    @property
    def truth_dir(self) -> Path:
        return self.root / "truth"

    @property
    def warehouse_path(self) -> Path:
        return self.root / "warehouse" / "millet.duckdb"

    @property
    def snapshots_dir(self) -> Path:
        return self.root / "snapshots"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def reconciliation_dir(self) -> Path:
        return self.root / "quality" / "reconciliation"

    @property
    def feast_dir(self) -> Path:
        return self.root / "feast"

    @property
    def models_dir(self) -> Path:
        """One folder per model, one per version in it, and the version served."""
        return self.root / "models"

    @property
    def tracking_dir(self) -> Path:
        """The nightly lists: early warning (borrowers to watch) and pre-approval, one folder per day."""
        return self.root / "tracking"

    @property
    def training_dir(self) -> Path:
        """Training sets `millet training-set` writes unless told elsewhere (an erasure reaches them)."""
        return self.root / "training"

    @property
    def logs_dir(self) -> Path:
        """Millet's commands' own logs of the tools they ran in-process (a history, the demo, status)."""
        return self.root / "logs"

    @property
    def erasure_dir(self) -> Path:
        """Erasure requests waiting for the next night, and the tombstones of everyone forgotten."""
        return self.root / "erasure"

    @property
    def tombstones_path(self) -> Path:
        """The user_key of everyone forgotten: never ingested again, never in a snapshot again."""
        return self.erasure_dir / "tombstones.parquet"

    @property
    def withdrawals_path(self) -> Path:
        """Each consent withdrawal applied (user_key, day): a re-run of an earlier night keeps them out."""
        return self.erasure_dir / "withdrawals.parquet"

    @property
    def audit_log_path(self) -> Path:
        """One JSON line per online read of the feature server: who, what, how many keys, when."""
        return self.root / "audit" / "online_reads.jsonl"

    @property
    def docs_dir(self) -> Path:
        """The catalog `millet docs` builds: dbt's docs (lineage from bronze to the marts)."""
        return self.root / "docs"

    @property
    def airflow_home(self) -> Path:
        return self.root / "airflow"

    # ---- code locations, fixed relative to the repository -----------------------------
    @property
    def dags_dir(self) -> Path:
        return REPO_ROOT / "dags"

    @property
    def dbt_project_dir(self) -> Path:
        return REPO_ROOT / "dbt_project"

    @property
    def feature_repo_dir(self) -> Path:
        return REPO_ROOT / "features"


    # ---- secrets ------------------------------------------------------------------------
    @property
    def keyring_path(self) -> Path:
        """The pseudonymisation keys, one per line, oldest first (0600, outside the repository)."""
        return self.secrets_dir / "pseudonym.key"

    @property
    def rotation_key_path(self) -> Path:
        """The key an unfinished `millet rotate-key` is adding; while it exists, nothing may hash."""
        return self.secrets_dir / "pseudonym.key.next"

    @cached_property
    def pseudonym_chain(self) -> KeyChain:
        from millet.ingest.pseudonymise import KeyChain

        if self.pseudonym_key is not None:
            return KeyChain([self.pseudonym_key.get_secret_value().encode()])
        if self.rotation_key_path.exists():
            raise RuntimeError(f"a pseudonymisation key rotation is unfinished ({self.rotation_key_path}): "
                               "run `millet rotate-key` again to finish it before anything else")
        return KeyChain(read_or_create_keyring(self.keyring_path))

    @property
    def pseudonym_secret(self) -> bytes:
        """The newest key: quarantine's seals are derived from it."""
        return self.pseudonym_chain.newest

    # ---- what the tools read ------------------------------------------------------------
    def duckdb_config(self, **overrides) -> dict:
        """The settings of every DuckDB connection Millet opens itself (dbt's come from profiles.yml)."""
        return {"memory_limit": self.duckdb_memory_limit, "threads": self.duckdb_threads,
                "disabled_optimizers": self.duckdb_disabled_optimizers, **overrides}

    def environ(self) -> dict[str, str]:
        """Environment for dbt (`env_var`); Settings itself never reads these."""
        return {
            "MILLET_BRONZE_DIR": str(self.bronze_dir),
            "MILLET_SNAPSHOTS_DIR": str(self.snapshots_dir),
            "MILLET_RECONCILIATION_DIR": str(self.reconciliation_dir),
            "MILLET_STATE_DIR": str(self.state_dir),
            "MILLET_TOMBSTONES_PATH": str(self.tombstones_path),
            "MILLET_WAREHOUSE_PATH": str(self.warehouse_path),
            "MILLET_DUCKDB_MEMORY_LIMIT": self.duckdb_memory_limit,
            "MILLET_DUCKDB_THREADS": str(self.duckdb_threads),
            "MILLET_DUCKDB_DISABLED_OPTIMIZERS": self.duckdb_disabled_optimizers,
            "GX_ANALYTICS_ENABLED": "False",  # no phoning home from a credit pipeline
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "False",
        }

    def dbt_defaults(self) -> dict[str, str]:
        """`environ()` as dbt_project/ spells its `env_var` defaults: paths relative to dbt_project/ (dbt
        resolves them from its working directory), so plain `dbt` run there finds this data root."""
        paths = {"MILLET_BRONZE_DIR", "MILLET_SNAPSHOTS_DIR", "MILLET_RECONCILIATION_DIR", "MILLET_STATE_DIR",
                 "MILLET_TOMBSTONES_PATH", "MILLET_WAREHOUSE_PATH"}
        return {name: os.path.relpath(value, self.dbt_project_dir) if name in paths else value
                for name, value in self.environ().items() if name.startswith("MILLET_")}

    def millet_environ(self) -> dict[str, str]:
        """These settings as MILLET_* variables, for processes that build their own (Airflow's tasks)."""
        values = self.model_dump(exclude_none=True)
        return {f"MILLET_{name.upper()}": str(v.get_secret_value() if isinstance(v, SecretStr) else v)
                for name, v in values.items()}

    def airflow_environ(self) -> dict[str, str]:
        """Airflow reads its config when first imported, so this must be exported before that."""
        return {
            "AIRFLOW_HOME": str(self.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_dir),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": self.airflow_log_level,
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.airflow_database,
            "AIRFLOW__CORE__PARALLELISM": str(self.airflow_parallelism),
            # A task that cannot start, or stops heartbeating, is failed and retried: never left waiting.
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": str(self.task_start_timeout_s),
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT_CHECK_INTERVAL": str(self._check_interval_s),
            "AIRFLOW__SCHEDULER__NUM_STUCK_IN_QUEUED_RETRIES": "0",  # the task's own retries decide
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(self.task_heartbeat_timeout_s),
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": str(
                self._check_interval_s),
            **self._airflow_async_database(),
        }

    def airflow_process_environ(self, base: dict[str, str], **services: str) -> dict[str, str]:
        """The environment of an Airflow process (a service, the CLI) for these settings: `base` with
        Millet's, dbt's and Airflow's variables and `services` (how the services find each other) over it,
        except the AIRFLOW__ options `base` itself sets: a person's own configuration wins."""
        env = {**base, **self.millet_environ(), **self.environ(), **self.airflow_environ(), **services}
        return env | {k: v for k, v in base.items() if k.startswith("AIRFLOW__")}

    @property
    def airflow_database(self) -> str:
        url = self.airflow_database_url
        if url is None:
            return f"sqlite:///{self.airflow_home / 'airflow.db'}?timeout={SQLITE_BUSY_TIMEOUT_S}"
        if url.startswith("postgresql") and "connect_timeout=" not in url:
            # A server that accepts and never answers must fail the command, not hang it.
            url += f"{'&' if '?' in url else '?'}connect_timeout={DATABASE_CONNECT_TIMEOUT_S}"
        return url

    def _airflow_async_database(self) -> dict[str, str]:
        # Airflow also opens an async engine and would guess asyncpg for PostgreSQL; psycopg 3 does both.
        scheme, _, rest = self.airflow_database.partition("://")
        if scheme != "postgresql+psycopg":
            return {}
        return {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": f"postgresql+psycopg_async://{rest}"}

    @property
    def _check_interval_s(self) -> int:
        return max(1, min(self.task_start_timeout_s, self.task_heartbeat_timeout_s) // 5)

    def export(self) -> None:
        """Put `environ()` into this process's environment, for dbt and Feast."""
        os.environ.update(self.environ())

    def export_for_airflow(self) -> None:
        """Airflow reads its own configuration at first import, and parses the DAG file and runs its
        tasks with Settings built from MILLET_* variables: export both, so they see these settings."""
        self.export()
        os.environ.update(self.millet_environ())
        os.environ.update(self.airflow_environ())


def declared_duckdb_config(**overrides) -> dict:
    """Settings.duckdb_config at the values Settings declares (declared_settings): for a small query where
    no Settings are at hand (hashing a few account ids, checking a few lines, the simulator), and the
    default of Feast's plug-ins, which get the settings' own in their configuration (feast_config)."""
    return declared_settings().duckdb_config(**overrides)


def read_keyring(path: Path) -> list[bytes]:
    return [line.strip() for line in path.read_bytes().splitlines() if line.strip()]


def write_private(path: Path, data: bytes) -> None:
    """Replace `path` whole with `data`, readable by its owner only at every moment."""
    write_bytes(path, data, private=True, durable=True)


def read_or_create_keyring(path: Path) -> list[bytes]:
    if path.exists():
        return read_keyring(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32).encode()
    # O_EXCL + 0600: never clobber a key another process just wrote, never world-readable.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_keyring(path)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key + b"\n")
        handle.flush()
        os.fsync(handle.fileno())  # a rotation's next key must outlive a crash before it is used
    return [key]


def declared_settings() -> Settings:
    """The defaults declared above, whatever the environment says: what committed files (dbt's defaults,
    Feast's yaml) are generated from."""
    return Settings.model_construct()


def get_settings() -> Settings:
    return Settings()
