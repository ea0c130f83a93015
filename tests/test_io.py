import json

import pytest

from ragdistill.run.io import append_jsonl, atomic_write_json, read_jsonl


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


def test_a_staged_folder_is_published_whole_and_a_second_build_yields_to_the_first(tmp_path):
    from ragdistill.run.io import publish_dir, staging_dir

    dest = tmp_path / "models" / "m"
    first, second = staging_dir(dest), staging_dir(dest)
    assert first != second and first.parent == dest.parent and not dest.exists()
    (first / "config.json").write_text("first")
    (second / "config.json").write_text("second")
    assert publish_dir(first, dest) == dest and (dest / "config.json").read_text() == "first"
    publish_dir(second, dest)  # another process finished later: its copy is dropped, the first one kept
    assert (dest / "config.json").read_text() == "first"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["m"]
