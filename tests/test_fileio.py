"""Atomic writes on a full disk: a one-line error that names the file, and the earlier file untouched."""

import os

import pytest

import lpn_edge.fileio as fileio
from lpn_edge.errors import LpnEdgeError
from lpn_edge.fileio import DiskFull, atomic_write


def fill_then_hit_a_full_device(tmp):
    tmp.write_bytes(b"half a checkpoint")
    with open("/dev/full", "wb") as full:  # the kernel's always-full device: every write fails with ENOSPC
        full.write(b"x" * 4096)
        full.flush()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_a_full_disk_is_one_clear_error_and_the_old_file_stays(tmp_path):
    target = tmp_path / "last.pt"
    target.write_bytes(b"the good checkpoint")
    with pytest.raises(DiskFull, match=r"could not write .*last\.pt: the disk holding .* is full") as caught:
        atomic_write(target, fill_then_hit_a_full_device)
    assert isinstance(caught.value, LpnEdgeError)  # the command line prints it as one line
    assert target.read_bytes() == b"the good checkpoint"
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_a_writer_that_fails_in_its_own_words_on_a_full_disk_is_recognised(tmp_path, monkeypatch):
    def torch_like_writer(tmp):
        tmp.write_bytes(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 184358016 vs 184357924")

    monkeypatch.setattr(fileio, "_free_bytes", lambda directory: 4096)  # what such a failure leaves
    with pytest.raises(DiskFull, match=r"model\.pt"):
        atomic_write(tmp_path / "model.pt", torch_like_writer)
    assert list(tmp_path.iterdir()) == []


def test_other_failures_keep_their_own_error(tmp_path):
    def broken_writer(tmp):
        tmp.write_bytes(b"partial")
        raise ValueError("not a disk problem")

    with pytest.raises(ValueError, match="not a disk problem"):
        atomic_write(tmp_path / "model.pt", broken_writer)
    assert list(tmp_path.iterdir()) == []
