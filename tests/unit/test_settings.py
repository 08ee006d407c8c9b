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
