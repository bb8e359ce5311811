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
    monkeypatch.setattr(c_loop.ctypes, "CDLL", lambda path, *a, **k: loaded.append(os.path.realpath(path)) or
                        real_cdll(path, *a, **k))  # the file an open descriptor (/proc/self/fd/N) names
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        c_loop.load_kernel()
    assert any("not private to this user" in str(w.message) and "private temporary folder" in str(w.message)
               for w in caught), [str(w.message) for w in caught]
    assert loaded and not any(p.startswith(str(shared)) for p in loaded), loaded
    assert not (shared / "cache").exists()


# ------------------------------------------------------------------ the check-to-load swap (issue 20 item 1, rest)
HAS_CC = shutil.which("gcc") is not None or shutil.which("cc") is not None
DECOY_C = "int mbp_abi_version(void) { return 999; }\n"


@pytest.fixture(scope="module")
def warm_cache(tmp_path_factory):
    """A cache folder holding the C loop, built once for this module's tests (each copies it)."""
    folder = tmp_path_factory.mktemp("warm") / "cache"
    saved = os.environ.get("MANUAL_BACKPROP_CACHE")
    os.environ["MANUAL_BACKPROP_CACHE"] = str(folder)
    try:
        c_loop._lib_cache.clear()
        c_loop.load_kernel()
    finally:
        c_loop._lib_cache.clear()
        if saved is None:
            del os.environ["MANUAL_BACKPROP_CACHE"]
        else:
            os.environ["MANUAL_BACKPROP_CACHE"] = saved
    (library,) = folder.glob("mlp_*.so")
    return library


def _decoy(tmp_path) -> str:
    """A library another user would plant: the project's symbol, another ABI."""
    (tmp_path / "decoy.c").write_text(DECOY_C)
    out = tmp_path / "decoy.so"
    __import__("subprocess").run([c_loop._compiler(), "-shared", "-fPIC", "-o", str(out), str(tmp_path / "decoy.c")],
                                 check=True)
    out.chmod(0o700)
    return str(out)


def _cache_with(tmp_path, library, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    shutil.copy2(library, cache / library.name)
    monkeypatch.setenv("MANUAL_BACKPROP_CACHE", str(cache))
    monkeypatch.setattr(c_loop, "_lib_cache", {})
    return cache


@pytest.mark.skipif(not HAS_CC, reason="no C compiler")
def test_a_library_swapped_after_the_check_is_not_what_gets_loaded(tmp_path, monkeypatch, warm_cache):
    cache = _cache_with(tmp_path, warm_cache, monkeypatch)
    decoy = _decoy(tmp_path)
    real_cdll, swapped = c_loop.ctypes.CDLL, []

    def swap_then_load(path, *args, **kwargs):  # the last moment before dlopen: the file at the path is replaced
        os.replace(decoy, cache / warm_cache.name)
        swapped.append(path)
        return real_cdll(path, *args, **kwargs)

    monkeypatch.setattr(c_loop.ctypes, "CDLL", swap_then_load)
    lib = c_loop.load_kernel()
    assert swapped, "the library was loaded through ctypes.CDLL"
    assert lib.mbp_abi_version() == c_loop._ABI_VERSION, "the file swapped in after the check was loaded"


@pytest.mark.skipif(not HAS_CC, reason="no C compiler")
def test_a_folder_swapped_for_a_link_after_the_check_is_refused(tmp_path, monkeypatch, warm_cache):
    cache = _cache_with(tmp_path, warm_cache, monkeypatch)
    planted = tmp_path / "planted"
    planted.mkdir(mode=0o700)
    shutil.copyfile(_decoy(tmp_path), planted / warm_cache.name)
    real_private = c_loop._private_folder

    def check_then_swap(folder):  # the folder passes the checks, then is replaced by a link to another folder
        checked = real_private(folder)
        if folder is not None and checked == cache:
            os.rename(cache, tmp_path / "moved")
            cache.symlink_to(planted)
        return checked

    monkeypatch.setattr(c_loop, "_private_folder", check_then_swap)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lib = c_loop.load_kernel()
    assert lib.mbp_abi_version() == c_loop._ABI_VERSION, "the library in the folder swapped in was loaded"
    assert any(str(cache) in str(w.message) and "private temporary folder" in str(w.message) for w in caught), \
        [str(w.message) for w in caught]


@pytest.mark.skipif(not HAS_CC, reason="no C compiler")
def test_without_proc_the_library_is_loaded_from_a_verified_private_copy(tmp_path, monkeypatch, warm_cache):
    _cache_with(tmp_path, warm_cache, monkeypatch)
    from manual_backprop.fast import private_load

    monkeypatch.setattr(private_load, "PROC_FD", str(tmp_path / "no_proc"))
    loaded, real_cdll = [], c_loop.ctypes.CDLL
    monkeypatch.setattr(c_loop.ctypes, "CDLL", lambda path, *a, **k: loaded.append(path) or real_cdll(path, *a, **k))
    lib = c_loop.load_kernel()
    assert lib.mbp_abi_version() == c_loop._ABI_VERSION
    (path,) = loaded
    assert os.path.basename(os.path.dirname(path)).startswith("manual_backprop_load_"), path
    assert not os.path.exists(os.path.dirname(path)), "the private copy is removed once loaded"

    def corrupt(data):  # the copy does not hold what was read from the checked file
        return data + b"x"

    monkeypatch.setattr(private_load, "_copy_bytes", corrupt)
    monkeypatch.setattr(c_loop, "_lib_cache", {})
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        with pytest.raises(FastPathUnavailable, match="digest"):
            c_loop.load_kernel()


@pytest.mark.skipif(not HAS_CC, reason="no C compiler")
def test_a_library_file_others_can_write_is_not_loaded(tmp_path, monkeypatch, warm_cache):
    cache = _cache_with(tmp_path, warm_cache, monkeypatch)
    (cache / warm_cache.name).chmod(0o777)
    loaded, real_cdll = [], c_loop.ctypes.CDLL
    monkeypatch.setattr(c_loop.ctypes, "CDLL", lambda path, *a, **k: loaded.append(os.path.realpath(path)) or
                        real_cdll(path, *a, **k))
    c_loop.load_kernel()
    assert loaded and str(cache / warm_cache.name) not in loaded, loaded


@pytest.mark.skipif(not HAS_CC, reason="no C compiler")
def test_two_libraries_loaded_one_after_another_are_two_libraries(tmp_path, warm_cache):
    """dlopen finds a loaded library by its name: a /proc/self/fd/N closed and reused would return the first."""
    from manual_backprop.fast import private_load

    folder = tmp_path / "libs"
    folder.mkdir(mode=0o700)
    shutil.copy2(warm_cache, folder / "a.so")
    shutil.copy2(_decoy(tmp_path), folder / "b.so")
    fd = private_load.open_private_folder(private_load.private_folder(folder))
    try:
        first = private_load.load_private_library(fd, "a.so", folder / "a.so")
        second = private_load.load_private_library(fd, "b.so", folder / "b.so")
    finally:
        os.close(fd)
    assert (first.mbp_abi_version(), second.mbp_abi_version()) == (c_loop._ABI_VERSION, 999)
