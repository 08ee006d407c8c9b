from datetime import date

from millet.simulate import simulate
from millet.simulate.faults import Faults
from tests.helpers import landing_lines, parsed_rows


def _drop_bytes(root, **kwargs):
    files = simulate(root, users=300, days=2, start=date(2026, 3, 1), **kwargs)
    return [f.read_bytes() for f in files]


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    first = _drop_bytes(tmp_path / "a", seed=11)
    again = _drop_bytes(tmp_path / "b", seed=11)
    other = _drop_bytes(tmp_path / "c", seed=12)
    assert first == again
    assert first != other


def test_faults_are_off_by_default_and_appear_when_asked(tmp_path):
    simulate(tmp_path / "clean", users=2000, days=1, start=date(2026, 3, 1), seed=3)
    clean = landing_lines(tmp_path / "clean", "commerce", "2026-03-01")
    rows, broken = parsed_rows(clean)
    assert broken == 0 and len(rows) == len(clean)

    faults = Faults(duplicate=0.1, malformed=0.1)
    simulate(tmp_path / "faulty", users=2000, days=1, start=date(2026, 3, 1), seed=3, faults=faults)
    faulty = landing_lines(tmp_path / "faulty", "commerce", "2026-03-01")
    _, broken = parsed_rows(faulty)
    assert len(faulty) > len(clean)  # duplicates were added
    assert 0.05 * len(clean) < broken < 0.2 * len(clean)
