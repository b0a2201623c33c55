import pickle

import pytest
import torch

import lpn_edge
from lpn_edge.checkpoint import read_checkpoint, save_checkpoint
from lpn_edge.errors import LpnEdgeError


def test_checkpoint_is_a_plain_dict_and_round_trips(tiny_checkpoint, tiny_config):
    payload = torch.load(tiny_checkpoint, weights_only=True)
    assert payload["epoch"] == 3 and payload["metrics"] == {"R@1": 0.5}
    model = lpn_edge.load_model(tiny_checkpoint)
    assert not model.training and model.config == tiny_config.model
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        again = lpn_edge.load_model(tiny_checkpoint).embed(x, "drone")
        assert torch.equal(model.embed(x, "drone"), again)


class Evil:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))


def test_refuses_files_that_are_not_checkpoints(tmp_path, tiny_checkpoint, monkeypatch):
    monkeypatch.chdir(tmp_path)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(tiny_checkpoint.read_bytes()[:1000])
    random_pickle = tmp_path / "evil.pt"
    random_pickle.write_bytes(pickle.dumps(Evil()))
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    for path in (truncated, random_pickle, foreign, empty, tmp_path / "absent.pt"):
        with pytest.raises(LpnEdgeError) as info:
            lpn_edge.load_model(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "PWNED").exists()


def test_official_state_dict_gets_a_conversion_hint(tmp_path):
    path = tmp_path / "net_119.pth"
    torch.save({"model_1.model.conv1.weight": torch.zeros(1), "classifier0.add_block.0.weight": torch.zeros(1)}, path)
    with pytest.raises(LpnEdgeError, match="convert-official"):
        read_checkpoint(path)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path, tiny_checkpoint, tiny_config, monkeypatch):
    before = tiny_checkpoint.read_bytes()

    def explode(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", explode)
    model = lpn_edge.load_model(tiny_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tiny_checkpoint, model, tiny_config)
    assert tiny_checkpoint.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [tiny_checkpoint.name]
