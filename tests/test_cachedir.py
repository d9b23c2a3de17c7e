"""kbench's one cache directory (sandbox/_cachedir.py), which the build cache, the CPU shapes,
the input sizes and a Ray node's baselines all live under."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sandbox import buildcache
from sandbox._cachedir import cache_base, cache_dir, write_json_atomically


def test_the_directory_follows_the_environment_and_off_turns_the_caches_off(monkeypatch, tmp_path):
    monkeypatch.setenv("KBENCH_CACHE_DIR", str(tmp_path / "c"))
    assert cache_dir() == cache_base() == tmp_path / "c"
    assert buildcache.cache_root() == tmp_path / "c" / "builds" and buildcache.enabled()
    monkeypatch.delenv("KBENCH_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "kbench"
    for off in ("off", "OFF", "0", "none", "false", "no"):
        monkeypatch.setenv("KBENCH_CACHE_DIR", off)
        assert cache_dir() is None and not buildcache.enabled()
        # a cache that must have a file (a Ray node's baselines) keeps the default place,
        # not a relative directory named "off"
        assert cache_base() == tmp_path / "xdg" / "kbench"


def test_a_cache_file_is_written_whole_and_an_unwritable_place_is_left_alone(tmp_path):
    path = tmp_path / "a" / "b.json"
    write_json_atomically(path, {"x": [1, 2]})
    assert json.loads(path.read_text()) == {"x": [1, 2]}
    assert [p.name for p in path.parent.iterdir()] == ["b.json"]  # no temporary left
    blocker = tmp_path / "file"
    blocker.write_text("")
    write_json_atomically(blocker / "c.json", {})  # its parent is a file: nothing raised
    assert not Path(str(blocker / "c.json")).exists()


@pytest.mark.parametrize("name", ["builds", "cpu_shapes", "input_sizes"])
def test_every_cache_lives_under_the_one_directory(monkeypatch, tmp_path, name):
    from kbench.executors._ray import node_cache_path
    from kbench.problems import load
    from sandbox._shapes import _cache_path
    from sandbox.cases import _InputSizes

    monkeypatch.setenv("KBENCH_CACHE_DIR", str(tmp_path))
    spec = load("level1/relu")[0]
    where = {"builds": buildcache.cache_root(), "cpu_shapes": _cache_path(spec),
             "input_sizes": _InputSizes(spec).path}[name]
    assert where is not None and tmp_path in where.parents
    assert node_cache_path() == tmp_path / "ray-baselines.db"
