import os
import subprocess
import sys
from pathlib import Path

import pytest

from ragdistill.benchmarks import data
from ragdistill.benchmarks.data import DataNotFoundError, require_alfworld

SHARED_ARCHIVE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "alfworld_json_2.1.3.tar.xz"


def _assert_says_both_ways(msg: str):
    assert "ALFWORLD_ARCHIVE=" in msg and "alfworld-download" in msg and "ALFWORLD_DATA" in msg
    assert "\n" not in msg  # one paragraph


def test_missing_data_folder_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("ALFWORLD_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DataNotFoundError) as err:
        require_alfworld()
    _assert_says_both_ways(str(err.value))
    assert "does not exist" in str(err.value)


def test_empty_data_folder_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("ALFWORLD_DATA", str(tmp_path))
    with pytest.raises(DataNotFoundError) as err:
        require_alfworld()
    _assert_says_both_ways(str(err.value))


def test_environment_listing_fails_with_the_same_message(tmp_path, monkeypatch):
    from ragdistill.benchmarks.alfworld.env import list_games

    monkeypatch.setenv("ALFWORLD_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DataNotFoundError, match="alfworld-download"):
        list_games("valid_unseen")


def test_make_data_cli_reports_a_bad_archive_and_exits_2(tmp_path):
    env = dict(os.environ, ALFWORLD_DATA=str(tmp_path / "d"), ALFWORLD_ARCHIVE=str(tmp_path / "missing.tar.xz"))
    result = subprocess.run([sys.executable, "-m", "ragdistill.benchmarks.data"], env=env, capture_output=True, text=True)
    assert result.returncode == 2
    assert "is not a file" in result.stderr


@pytest.mark.skipif(not SHARED_ARCHIVE.is_file(), reason="the development archive is not beside the clone")
def test_unpacking_the_archive_gives_all_three_splits(tmp_path):
    root = data.fetch_alfworld(archive=str(SHARED_ARCHIVE), root=tmp_path / "alfworld")
    counts = {s: len(list((root / data.ALFWORLD_JSON / s).glob("*/*/game.tw-pddl"))) for s in data.ALFWORLD_SPLITS}
    assert counts == {"train": 3553, "valid_seen": 140, "valid_unseen": 134}
    assert not [p for p in root.iterdir() if p.name.startswith(".unpack")]
    # A second call finds it ready and does nothing.
    assert data.fetch_alfworld(archive=str(tmp_path / "ignored"), root=root) == root
