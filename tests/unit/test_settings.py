import os
import stat

from millet.settings import REPO_ROOT, Settings


def test_a_relative_data_root_does_not_follow_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # Feast's apply changes the cwd mid-run
    assert Settings(data_root=".millet-x").root == REPO_ROOT / ".millet-x"
    assert Settings(data_root=tmp_path / "abs").root == tmp_path / "abs"


def test_the_generated_pseudonym_key_is_private_and_stable(tmp_path):
    settings = Settings(secrets_dir=tmp_path / "secrets", pseudonym_key=None)
    key = settings.pseudonym_secret
    path = tmp_path / "secrets" / "pseudonym.key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(key) == 64
    assert Settings(secrets_dir=tmp_path / "secrets", pseudonym_key=None).pseudonym_secret == key


def test_an_airflow_process_gets_these_settings_but_a_persons_own_airflow_options_win(tmp_path):
    settings = Settings(data_root=tmp_path / "data", task_start_timeout_s=123)
    base = {"PATH": "/bin", "MILLET_DATA_ROOT": "/elsewhere", "AIRFLOW__CORE__PARALLELISM": "7"}
    env = settings.airflow_process_environ(base, AIRFLOW__CORE__EXECUTOR="LocalExecutor",
                                           AIRFLOW__CORE__PARALLELISM="2")
    assert env["PATH"] == "/bin"
    assert env["MILLET_DATA_ROOT"] == str(tmp_path / "data")  # these settings, not the caller's
    assert env["AIRFLOW_HOME"] == str(tmp_path / "data" / "airflow")
    assert env["AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT"] == "123"
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__CORE__PARALLELISM"] == "7"  # the person's, over the settings' and the services'


def test_an_optional_setting_left_blank_is_unset_and_no_env_file_is_read(tmp_path, monkeypatch):
    from millet.alerts import _sinks

    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("MILLET_ALERT_SMTP_HOST=smtp.example\nMILLET_ALERT_EMAIL_TO=a@example\n")
    monkeypatch.setenv("MILLET_ALERT_WEBHOOK_URL", "")  # as Compose passes ${MILLET_ALERT_WEBHOOK_URL:-}
    monkeypatch.setenv("MILLET_FEAST_REGISTRY_URL", "")
    settings = Settings()
    assert settings.alert_webhook_url is None and settings.feast_registry_url is None
    assert settings.alert_smtp_host is None
    assert _sinks(settings) == {}  # no sink queues alerts it can never deliver
    monkeypatch.setenv("MILLET_ALERT_WEBHOOK_URL", "http://127.0.0.1:9/hook")
    assert list(_sinks(Settings())) == ["webhook"]
