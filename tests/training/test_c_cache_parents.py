"""The C loop's library cache (issue 20 item 1): code is loaded only from a folder that nobody but this user can
change, and that holds for every folder on the way to it, not only the last one."""

import os
import shutil
import stat
import warnings

import pytest

from manual_backprop.fast import c_loop
from manual_backprop.fast.common import FastPathUnavailable


def test_a_parent_others_can_write_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)  # another user could rename "mine" and put their own folder in its place
    mine = shared / "mine"
    mine.mkdir(mode=0o700)
    with pytest.raises(FastPathUnavailable, match=f"{shared} on the way has owner uid .* and mode 0o777"):
        c_loop._private_folder(mine / "cache")
    assert not (mine / "cache").exists(), "nothing is created below a folder that is refused"


def test_a_sticky_shared_parent_is_fine_and_the_folder_is_made_private(tmp_path):
    shared = tmp_path / "tmp_like"
    shared.mkdir()
    os.chmod(shared, 0o1777)  # like /tmp: others cannot rename what is ours
    folder = c_loop._private_folder(shared / "a" / "cache")
    assert folder == shared / "a" / "cache" and stat.S_IMODE(os.lstat(folder).st_mode) == 0o700


def test_a_symlink_inside_a_shared_folder_is_refused(tmp_path):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    (shared / "link").symlink_to(private)
    with pytest.raises(FastPathUnavailable, match="on the way"):
        c_loop._private_folder(shared / "link" / "cache")
    folder = c_loop._private_folder(tmp_path / "private" / "cache")  # the same folder, reached safely
    assert folder.parent == private


def test_our_own_folder_made_group_writable_is_made_private_again(tmp_path):
    folder = tmp_path / "cache"
    folder.mkdir()
    os.chmod(folder, 0o777)
    assert c_loop._private_folder(folder) == folder
    assert stat.S_IMODE(os.lstat(folder).st_mode) == 0o755


@pytest.mark.skipif(shutil.which("gcc") is None and shutil.which("cc") is None, reason="no C compiler")
def test_load_kernel_warns_and_builds_privately_when_the_cache_is_under_a_shared_folder(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    monkeypatch.setenv("MANUAL_BACKPROP_CACHE", str(shared / "cache"))
    monkeypatch.setattr(c_loop, "_lib_cache", {})
    loaded = []
    real_cdll = c_loop.ctypes.CDLL
    monkeypatch.setattr(c_loop.ctypes, "CDLL", lambda path, *a, **k: loaded.append(path) or real_cdll(path, *a, **k))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        c_loop.load_kernel()
    assert any("not private to this user" in str(w.message) and "private temporary folder" in str(w.message)
               for w in caught), [str(w.message) for w in caught]
    assert loaded and not any(p.startswith(str(shared)) for p in loaded), loaded
    assert not (shared / "cache").exists()
