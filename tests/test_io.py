import json

import pytest

from ragdistill.io import append_jsonl, atomic_write_json, read_jsonl


def test_atomic_write_leaves_no_temp_files(tmp_path):
    path = atomic_write_json(tmp_path / "m" / "metrics.json", {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]


def test_a_torn_last_line_is_skipped_but_damage_elsewhere_is_an_error(tmp_path):
    path = tmp_path / "episodes.jsonl"
    append_jsonl(path, {"i": 0})
    append_jsonl(path, {"i": 1})
    with open(path, "a") as f:
        f.write('{"i": 2, "trunc')  # a crash in the middle of a write
    assert [r["i"] for r in read_jsonl(path)] == [0, 1]
    append_jsonl(path, {"i": 3})  # resuming: the torn line is cut, the new record stands alone
    assert [r["i"] for r in read_jsonl(path)] == [0, 1, 3]
    path.write_text('{"i": 0}\n{broken\n{"i": 2}\n')
    with pytest.raises(ValueError, match="line 2"):
        list(read_jsonl(path))
