"""A full disk while a checkpoint is written (second red-team pass of issue 20, on a 600 KiB tmpfs): torch's zip
writer turned the ENOSPC into "[enforce fail at inline_container.cc:672] . unexpected pos 151104 vs 151056",
naming neither the file nor the cause. Now it is the one OSError atomic_write gives every write: the file and
"No space left on device"; the previous checkpoint is intact and no temporary file is left."""

import errno
import io

import pytest
import torch

from manual_backprop import checkpoint


class _FullDisk(io.RawIOBase):
    """A file on a disk that fills up after ``room`` bytes (a raw write fails with ENOSPC, as the kernel's does)."""

    def __init__(self, raw, room):
        self.raw, self.room = raw, room

    def writable(self):
        return True

    def write(self, data):
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.raw.write(data)

    def fileno(self):
        return self.raw.fileno()

    def flush(self):
        self.raw.flush()


@pytest.mark.parametrize("room", [0, 700, 30_000])
def test_a_checkpoint_on_a_full_disk_is_one_error_naming_the_file_and_keeps_the_old_one(tmp_path, monkeypatch, room):
    path = tmp_path / "checkpoint.pt"
    checkpoint.save_checkpoint({"epoch": 1}, path)
    before = path.read_bytes()
    real_fdopen = checkpoint.os.fdopen

    def full_disk(fd, mode="r", *args, **kwargs):
        f = real_fdopen(fd, mode, *args, **kwargs)
        return io.BufferedWriter(_FullDisk(f, room)) if "w" in mode else f

    monkeypatch.setattr(checkpoint.os, "fdopen", full_disk)
    with pytest.raises(OSError, match=f"cannot write {path}: No space left on device") as caught:
        checkpoint.save_checkpoint({"epoch": 2, "w": torch.zeros(20_000)}, path)
    assert caught.value.errno == errno.ENOSPC
    assert path.read_bytes() == before, "the previous checkpoint is intact"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"], "no temporary file is left"
