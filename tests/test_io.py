"""Atomic outputs: complete or absent, with the permissions a plain write would give."""

import os
import stat

import pytest

from unmem.errors import UnmemError
from unmem.io import atomic_dir, read_records, write_json


def test_atomic_dir_is_complete_or_absent(tmp_path):
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "out") as staging:
        write_json(staging / "half.json", {})
        raise RuntimeError("killed mid-write")
    assert list(tmp_path.iterdir()) == []
    with atomic_dir(tmp_path / "out") as staging:
        write_json(staging / "a.json", {"x": 1})
    assert (tmp_path / "out" / "a.json").is_file()
    with pytest.raises(UnmemError, match="already exists"), atomic_dir(tmp_path / "out"):
        pass


def test_outputs_follow_the_umask_not_temp_file_modes(tmp_path):
    umask = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "out") as staging:
            write_json(staging / "a.json", {})
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "out" / "a.json").stat().st_mode) == 0o644


def test_json_list_layout_names_the_record_and_field(tmp_path):
    path = tmp_path / "forget.json"
    path.write_text('[{"question": "q", "answer": "a"}, {"question": "q2"}]')
    with pytest.raises(UnmemError, match=r"forget.json:2: field 'answer': missing or empty"):
        read_records(path, required=("question", "answer"))


def test_tofu_json_lines_in_a_json_file(tmp_path):
    """TOFU publishes JSON Lines under a .json name: one record per line, no enclosing list."""
    path = tmp_path / "forget10.json"
    path.write_text('{"question": "q1", "answer": "a1"}\n{"question": "q2", "answer": "a2"}\n')
    assert [r["question"] for r in read_records(path, required=("question", "answer"))] == ["q1", "q2"]
    path.write_text('{"question": "q1", "answer": "a1"}\n{"question": "q2"}\n')
    with pytest.raises(UnmemError, match=r"forget10.json:2: field 'answer': missing or empty"):
        read_records(path, required=("question", "answer"))
    path.write_text('{"question": "q1", "answer": "a1"}\n{"question": \n')
    with pytest.raises(UnmemError, match=r"forget10.json:2: invalid JSON"):
        read_records(path)
    path.write_text('{\n  "records": []\n}\n')
    with pytest.raises(UnmemError, match=r"forget10.json: expected a JSON list of records or JSON Lines"):
        read_records(path)
