"""Training smoke tests: the CLI on tiny synthetic data, resume, checkpoint metadata,
and every registered 3D network forward and through one Trainer step."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")

from braintumor.cli import main  # noqa: E402
from braintumor.config import load_config  # noqa: E402
from braintumor.networks import create_network, list_networks  # noqa: E402
from braintumor.training.trainer import Trainer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"

#: tiny widths so every network runs in a fraction of a second on a 32^3 input
TINY_ARGS: dict[str, dict] = {
    "compact_unet": {"channels": [4, 8, 16, 32]},
    "unet3d": {"channels": [4, 8, 16, 32]},
    "attention_unet": {"channels": [4, 8, 16, 32]},
    "segresnet": {"init_filters": 8},
    "unet2p5d": {"channels": [4, 8, 16, 32]},
}


def _tiny(name: str) -> dict:
    return TINY_ARGS.get(name, {})


@pytest.mark.slow
def test_smoke_config_trains_writes_checkpoint_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "smoke"
    assert main(["train", "--config", str(SMOKE), "--out", str(out), "--no-progress"]) == 0
    for name in ("last.pt", "best.pt", "config.yaml", "log.csv", "curve.png", "summary.json"):
        assert (out / name).exists(), name
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["train"]["name"] == "smoke"
    assert saved["code_version"]
    split = saved["split"]
    assert split["train"] and split["val"]
    assert not set(split["train"]) & set(split["val"])  # patient-wise: no case in both
    ck = torch.load(out / "last.pt", map_location="cpu", weights_only=False)
    assert ck["epoch"] == 2 and ck["step_count"] == 6
    with open(out / "log.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 and all(np.isfinite(float(r["loss"])) for r in rows)
    assert "val_dice" in rows[-1]

    # resume: two more epochs continue from last.pt (step count and history carry on)
    assert main(["train", "--config", str(SMOKE), "--out", str(out), "--no-progress",
                 "--set", "epochs=4"]) == 0
    ck2 = torch.load(out / "last.pt", map_location="cpu", weights_only=False)
    assert ck2["epoch"] == 4 and ck2["step_count"] == 12
    with open(out / "log.csv") as fh:
        rows2 = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows2] == [1, 2, 3, 4]
    assert rows2[0]["loss"] == rows[0]["loss"]  # the first epochs were not retrained


def test_smoke_config_is_small() -> None:
    cfg = load_config(SMOKE)
    assert cfg.synthetic > 0 and np.prod(cfg.synthetic_shape) <= 64**3
    assert cfg.epochs * cfg.steps_per_epoch <= 20


def test_train_cli_refuses_unknown_config_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {name: x, no_such_field: 1}\n")
    proc = subprocess.run([sys.executable, "-m", "braintumor", "train", "--config", str(bad)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "no_such_field" in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("name", list_networks(dims=3))
def test_every_3d_network_forward_shape_no_nan(name: str) -> None:
    torch.manual_seed(0)
    net = create_network(name, out_channels=3, **_tiny(name)).eval()
    x = torch.randn(1, 4, 32, 32, 32)
    with torch.inference_mode():
        y = net(x)
    assert tuple(y.shape) == (1, 3, 32, 32, 32)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", list_networks())
def test_create_network_refuses_an_argument_the_network_does_not_take(name: str) -> None:
    """create_network("compact_unet", chanels=...) built the default 2.8 M network (the
    3D factories swallowed any argument) and the 2D ones raised a raw TypeError; now a
    misspelling is one sentence naming what the network takes."""
    from braintumor.errors import InputError
    from braintumor.networks import network_arguments

    with pytest.raises(InputError, match=rf"^Network {name} takes no argument chanels; it "
                       r"takes: in_channels, out_channels, .*\.$") as err:
        create_network(name, chanels=(8, 16, 32, 64))
    assert all(a in str(err.value) for a in network_arguments(name))
    with pytest.raises(InputError, match="takes no arguments chanels, widths;"):
        create_network(name, chanels=3, widths=3)
    # what a training config sets for every network is passed on where it is taken
    net = create_network(name, out_channels=2, dropout=0.0, deep_supervision=True,
                         **_tiny(name))
    assert sum(p.numel() for p in net.parameters()) > 0


@pytest.mark.slow
@pytest.mark.parametrize("name", list_networks(dims=3))
def test_every_3d_network_trains_one_step(name: str, tmp_path: Path) -> None:
    cfg = load_config(SMOKE).replace(
        name=f"one-{name}", network=name, network_args=_tiny(name), epochs=1,
        steps_per_epoch=1, warmup_steps=1, fold=-1, synthetic=2, folds=2)
    summary = Trainer(cfg, tmp_path / name, device="cpu", progress=False).fit()
    assert summary["steps"] == 1
    ck = torch.load(tmp_path / name / "last.pt", map_location="cpu", weights_only=False)
    # the step changed the weights (same seed, so the fresh net is the initial one)
    torch.manual_seed(cfg.seed)
    init = create_network(name, out_channels=3, **_tiny(name)).state_dict()
    changed = any(not torch.equal(init[k], ck["model"][k]) for k in init
                  if init[k].dtype.is_floating_point)
    assert changed and set(init) == set(ck["model"])
    assert all(torch.isfinite(v).all() for v in ck["model"].values()
               if v.dtype.is_floating_point)


@pytest.mark.slow
def test_deep_supervision_checkpoint_loads_for_inference(tmp_path: Path) -> None:
    from braintumor.inference import load_checkpoint_net

    cfg = load_config(SMOKE).replace(name="ds", deep_supervision=True, epochs=1,
                                     steps_per_epoch=1, warmup_steps=1, fold=-1, synthetic=2)
    Trainer(cfg, tmp_path, device="cpu", progress=False).fit()
    net, loaded = load_checkpoint_net(tmp_path / "last.pt")
    assert loaded.deep_supervision
    with torch.inference_mode():
        y = net(torch.zeros(1, 4, 32, 32, 32))
    assert isinstance(y, torch.Tensor) and tuple(y.shape) == (1, 3, 32, 32, 32)


@pytest.mark.slow
def test_init_from_starts_from_another_runs_weights(tmp_path: Path) -> None:
    """A warm restart loads the earlier run's weights (with a fresh optimizer) before its
    first step; a checkpoint of another network is refused in one sentence."""
    from braintumor.errors import InputError

    base = load_config(SMOKE).replace(
        name="a", network="compact_unet", network_args=_tiny("compact_unet"), epochs=1,
        steps_per_epoch=1, warmup_steps=1, fold=-1, synthetic=2, folds=2)
    Trainer(base, tmp_path / "a", device="cpu", progress=False).fit()
    first = torch.load(tmp_path / "a" / "last.pt", map_location="cpu", weights_only=False)
    # lr 0: the restart's step leaves the weights where the first run ended
    warm = base.replace(name="b", init_from=str(tmp_path / "{fold}" / "last.pt"), lr=0.0,
                        seed=1)
    (tmp_path / "-1").symlink_to(tmp_path / "a")
    Trainer(warm, tmp_path / "b", device="cpu", progress=False).fit()
    second = torch.load(tmp_path / "b" / "last.pt", map_location="cpu", weights_only=False)
    assert second["step_count"] == 1  # a fresh schedule, not a resume
    for k, v in first["model"].items():
        if v.dtype.is_floating_point and "running" not in k:
            assert torch.allclose(v, second["model"][k]), k
    other = base.replace(name="c", network_args={"channels": [8, 16, 16, 16]},
                         init_from=str(tmp_path / "a" / "last.pt"))
    with pytest.raises(InputError, match="does not fit"):
        Trainer(other, tmp_path / "c", device="cpu", progress=False).fit()


def _small(**changes: object) -> object:
    small = {"network": "compact_unet", "network_args": _tiny("compact_unet"), "epochs": 2,
             "steps_per_epoch": 1, "warmup_steps": 1, "fold": -1, "synthetic": 2, "folds": 2}
    return load_config(SMOKE).replace(**{**small, **changes})


def test_resume_refuses_another_config(tmp_path: Path) -> None:
    """A run folder resumed with another recipe would mix two recipes in one checkpoint
    and rewrite its record: refused in one sentence; more epochs are a resume."""
    from braintumor.errors import InputError

    cfg = _small()
    Trainer(cfg, tmp_path / "r", device="cpu", progress=False).fit()
    record = (tmp_path / "r" / "config.yaml").read_text()
    with pytest.raises(InputError, match=r"another config \(lr 0\.\d+ -> 0\.5\)"):
        Trainer(cfg.replace(lr=0.5), tmp_path / "r", device="cpu", progress=False).fit()
    assert (tmp_path / "r" / "config.yaml").read_text() == record
    Trainer(cfg.replace(epochs=3), tmp_path / "r", device="cpu", progress=False).fit()
    assert torch.load(tmp_path / "r" / "last.pt", weights_only=False)["epoch"] == 3


def test_a_resume_refused_for_an_augment_setting_names_only_that_setting() -> None:
    """A resume refused because one augment setting changed printed every augment
    setting, old and new: only the changed one is named."""
    from braintumor.config import changed_settings, to_dict
    from braintumor.errors import InputError
    from braintumor.training.trainer import check_resume

    cfg = _small()
    what = changed_settings(to_dict(cfg), to_dict(cfg.replace(**{"augment.noise": False})))
    assert what == "augment.noise True -> False"
    with pytest.raises(InputError, match=r"another config \(augment\.noise True -> False\);"):
        check_resume(Path("r"), to_dict(cfg), cfg.replace(**{"augment.noise": False}))
    assert changed_settings(to_dict(cfg), to_dict(cfg.replace(
        lr=0.5, network_args={"channels": [4, 8, 16, 64]}))) == (
        "network_args.channels [4, 8, 16, 32] -> [4, 8, 16, 64], lr 0.003 -> 0.5")
    # an entry on one side only is a change, even where the other side's would be None
    assert changed_settings({"network_args": {"channels": [4, 8], "norm": None}},
                            {"network_args": {"channels": [4, 8]}}) == \
        "network_args.norm None -> unset"


def test_resume_with_dropout_equals_one_run(tmp_path: Path) -> None:
    """Dropout draws from torch's global generator: a run stopped and resumed ends with
    the same weights as one that ran through (a constant schedule, so that stopping
    after one epoch stands for an interruption)."""
    cfg = _small(dropout=0.3, schedule="constant")
    Trainer(cfg, tmp_path / "once", device="cpu", progress=False).fit()
    Trainer(cfg.replace(epochs=1), tmp_path / "twice", device="cpu", progress=False).fit()
    torch.manual_seed(123)  # whatever else the process draws in between
    Trainer(cfg, tmp_path / "twice", device="cpu", progress=False).fit()
    a = torch.load(tmp_path / "once" / "last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "twice" / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_finished_budget_run_stays_finished(tmp_path: Path) -> None:
    cfg = _small(epochs=50, time_budget_min=0.0001)
    first = Trainer(cfg, tmp_path / "b", device="cpu", progress=False).fit()
    assert first["stop"] == "time budget" and first["epochs"] == 1
    before = (tmp_path / "b" / "last.pt").read_bytes()
    again = Trainer(cfg, tmp_path / "b", device="cpu", progress=False).fit()
    assert again["epochs"] == 1 and (tmp_path / "b" / "last.pt").read_bytes() == before


@pytest.mark.parametrize("change, says", [
    ({"optimizer": "rmsprop"}, "optimizer must be one of adamw, adam, sgd"),
    ({"schedule": "linear"}, "schedule must be one of"),
    ({"loss": "focal"}, "loss must be one of"),
    ({"output": "softmx"}, "output must be one of"),
    ({"lr": "fast"}, "lr must be a number"),
    ({"epochs": "6"}, "epochs must be a whole number"),
    ({"patch": 32}, "patch must be three whole numbers"),
    ({"patch": [32, 32]}, "patch must be three whole numbers"),
    ({"augment": True}, "augment must be a mapping"),
    ({"fold": 5}, "fold 5 does not exist"),
    ({"dropout": 1.5}, "under 1"),
    ({"early_stopping": -1}, "early_stopping must be 0 or more, not -1"),
    ({"seed": -1}, "seed must be 0 or more, not -1"),
    ({"split_seed": -3}, "split_seed must be 0 or more, not -3"),
    ({"threads": -1}, "threads must be 0 or more, not -1"),
    ({"sw_overlap": -0.5}, "sw_overlap must be 0 or more and under 1"),
    ({"sw_overlap": 1.0}, "sw_overlap must be 0 or more and under 1"),
])
def test_config_values_are_checked(tmp_path: Path, change: dict, says: str) -> None:
    """What the trainer would misread or silently replace by its default is refused in
    one sentence, from a file and from --set alike."""
    from braintumor.config import from_dict, to_dict
    from braintumor.errors import InputError

    with pytest.raises(InputError, match=says):
        from_dict({**to_dict(load_config(SMOKE)), **change})
    key, value = next(iter(change.items()))
    arg = f"{key}={yaml.safe_dump(value, default_flow_style=True).strip()}"
    arg = arg.removesuffix("\n...").removesuffix(" ...")
    assert main(["train", "--config", str(SMOKE), "--out", str(tmp_path / "x"),
                 "--no-progress", "--set", arg]) == 2
    assert not (tmp_path / "x" / "last.pt").exists()


def test_a_config_file_not_in_utf8_or_with_a_train_list_is_one_sentence(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A config in another encoding was a UnicodeDecodeError traceback, and ``train:`` as
    a list was 'Unknown config keys: train.': each is one sentence that says why."""
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("train:\n  name: tumeur \xe9t\xe9\n".encode("latin-1"))
    listed = tmp_path / "listed.yaml"
    listed.write_text("train: [1, 2]\n")
    for path, says in [(latin, "not a text file in UTF-8"),
                       (listed, "'train' must be a mapping of training settings")]:
        assert main(["train", "--config", str(path), "--out", str(tmp_path / "x"),
                     "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert f"{path}: {says}" in err and "Traceback" not in err, err
    assert not (tmp_path / "x").exists()


def test_numbers_in_scientific_notation_are_numbers(tmp_path: Path) -> None:
    """PyYAML reads 1e-3 (no dot) as text; a number field takes it as the number."""
    from braintumor.config import from_dict, to_dict

    path = tmp_path / "sci.yaml"
    path.write_text(SMOKE.read_text().replace("lr: 0.003", "lr: 3e-3\n  weight_decay: 1e-5"))
    cfg = load_config(path)
    assert cfg.lr == 0.003 and cfg.weight_decay == 1e-5
    assert cfg.replace(lr="1e-4").lr == 1e-4
    assert cfg.replace(**{"augment.strength": "5e-1"}).augment.strength == 0.5
    assert from_dict({**to_dict(cfg), "augment": {"strength": "2e0"}}).augment.strength == 2.0


def test_set_augment_mapping_merges_as_a_study_set_does() -> None:
    """``--set 'augment={strength: 2.0}'`` changes that setting and keeps the others, as a
    study's ``set:`` block does (it was refused as 'not a mapping' of a mapping)."""
    from braintumor.commands.train import parse_overrides
    from braintumor.errors import InputError

    cfg = load_config(SMOKE).replace(**{"augment.rotate": False})
    got = cfg.replace(**parse_overrides(["augment={strength: 2.0}"]))
    assert got.augment.strength == 2.0 and got.augment.rotate is False
    assert cfg.replace(augment={"strength": "5e-1"}).augment.strength == 0.5
    with pytest.raises(InputError, match="Unknown config keys: augment.strenth"):
        cfg.replace(augment={"strenth": 2.0})


def test_one_case_id_alone_is_one_case(tmp_path: Path) -> None:
    from braintumor.config import from_dict, to_dict

    cfg = load_config(SMOKE)
    assert cfg.replace(case_ids="Brats18_2013_11_1").case_ids == ("Brats18_2013_11_1",)
    assert from_dict({**to_dict(cfg), "case_ids": "phantom_1000"}).case_ids == ("phantom_1000",)
    # through the command line: trained on that one case
    out = tmp_path / "one"
    assert main(["train", "--config", str(SMOKE), "--out", str(out), "--no-progress",
                 "--set", "case_ids=phantom_1000", "epochs=1", "fold=-1"]) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["train"]["case_ids"] == ["phantom_1000"]
    assert saved["split"]["train"] == ["phantom_1000"]


@pytest.mark.parametrize("setting, says", [
    ("patch=[24,24,24]", "patch [24, 24, 24] does not fit network compact_unet with its "
                         "network_args: each side must be a multiple of 16 and at least 32 "
                         "(e.g. patch [32, 32, 32])."),
    ("network_args={chanels: [4, 8, 16, 32]}", "network_args chanels: not an argument of "
                                               "network compact_unet, which takes: channels."),
    ("network_args={dropout: 0.2}", "network_args dropout comes from the config field dropout"),
    ("network=unet2d", "network unet2d is a 2D network"),
])
def test_network_mistakes_are_one_sentence(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           setting: str, says: str) -> None:
    """A patch the network's downsampling does not divide, or a network argument it does
    not take (each factory ignores extra keywords), is refused before training."""
    assert main(["train", "--config", str(SMOKE), "--out", str(tmp_path / "x"),
                 "--no-progress", "--set", setting]) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1
    assert not (tmp_path / "x" / "last.pt").exists()


@pytest.mark.parametrize("name", list_networks(dims=3))
def test_patch_rule_matches_each_network(name: str) -> None:
    """The smallest patch the rule accepts runs through the network (training mode, so
    normalisation sees its coarsest level), and the rule refuses a side off its multiple."""
    from braintumor.errors import InputError
    from braintumor.networks import check_network, patch_rule

    rule = patch_rule(name, _tiny(name))
    assert rule is not None
    multiple, minimum = rule
    net = create_network(name, out_channels=3, **_tiny(name)).train()
    with torch.no_grad():
        y = net(torch.zeros(1, 4, *minimum))
    assert tuple(y.shape[2:]) == minimum
    if multiple[0] > 1:
        bad = (minimum[0] + multiple[0] // 2, *minimum[1:])
        with pytest.raises(InputError, match=f"multiple of {multiple[0]}|multiples of"):
            check_network(name, _tiny(name), bad)


def test_stop_reason_is_the_epoch_limit_when_time_is_left(tmp_path: Path) -> None:
    """A run that ends at its last epoch with most of its time budget left stopped at its
    epoch limit, not for the budget (the schedule's share of the run is 1 by steps)."""
    summary = Trainer(_small(time_budget_min=30.0), tmp_path / "e", device="cpu",
                      progress=False).fit()
    assert summary["epochs"] == 2 and summary["stop"] == "epochs"


def test_a_run_without_validation_has_no_best_score(tmp_path: Path) -> None:
    """fold -1 trains on every case: there is no validation Dice to report (null, not
    -1)."""
    import json

    summary = Trainer(_small(epochs=1), tmp_path / "all", device="cpu", progress=False).fit()
    assert summary["best_val_dice"] is None
    assert json.loads((tmp_path / "all" / "summary.json").read_text())["best_val_dice"] is None


def test_resume_says_from_where(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r"
    args = ["train", "--config", str(SMOKE), "--out", str(out), "--no-progress"]
    assert main([*args, "--set", "epochs=1"]) == 0
    assert "resumed" not in capsys.readouterr().err
    assert main([*args, "--set", "epochs=2"]) == 0
    assert f"resumed from {out / 'last.pt'} at epoch 1/2" in capsys.readouterr().err


def test_fewer_epochs_than_the_run_has_leave_it_as_it_is(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Resuming with fewer epochs than done said 'at epoch 2/1' and rewrote config.yaml to
    the smaller number, which no longer matched the checkpoint: nothing to do, said once,
    and the record is left as it is."""
    out = tmp_path / "r"
    args = ["train", "--config", str(SMOKE), "--out", str(out), "--no-progress"]
    assert main(args) == 0
    record = (out / "config.yaml").read_text()
    last = (out / "last.pt").read_bytes()
    capsys.readouterr()
    assert main([*args, "--set", "epochs=1"]) == 0
    err = capsys.readouterr().err
    assert f"the run in {out} already has 2 epochs (asked 1); nothing to do" in err
    assert "resumed" not in err
    assert (out / "config.yaml").read_text() == record
    assert (out / "last.pt").read_bytes() == last


@pytest.mark.parametrize("damage", ["garbage", "cut short"])
def test_a_last_pt_that_cannot_be_read_is_one_sentence(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str) -> None:
    """A corrupt or cut-short last.pt ended the resume in a torch traceback: one sentence
    naming it and the ways out; the file is left as it is."""
    out = tmp_path / "r"
    args = ["train", "--config", str(SMOKE), "--out", str(out), "--no-progress",
            "--set", "epochs=1"]
    if damage == "garbage":
        out.mkdir()
        (out / "last.pt").write_text("garbage\n")
    else:
        assert main(args) == 0
        (out / "last.pt").write_bytes((out / "last.pt").read_bytes()[:1000])
    before = (out / "last.pt").read_bytes()
    capsys.readouterr()
    assert main([*args[:-1], "epochs=2"]) == 2
    err = capsys.readouterr().err
    assert f"{out / 'last.pt'}: cannot be read as a training checkpoint" in err, err
    assert "move it aside" in err and "Traceback" not in err and err.count("\n") == 1
    assert (out / "last.pt").read_bytes() == before


def test_a_last_pt_that_fails_to_load_says_why(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A whole checkpoint that fails to load for another reason than being cut short (a
    class its pickle names that this version lacks, as between library versions): the
    sentence carries the cause, so a worthwhile file is not taken for garbage."""
    import sys

    import torch

    from braintumor.errors import InputError
    from braintumor.training.trainer import _load_last

    last = tmp_path / "last.pt"
    torch.save({"model": {}, "optimizer": {}, "epoch": 1, "obj": _Named()}, last)
    monkeypatch.delattr(sys.modules[__name__], "_Named")
    with pytest.raises(InputError) as err:
        _load_last(last, "cpu")
    msg = str(err.value)
    assert "AttributeError" in msg and "_Named" in msg, msg
    assert "\n" not in msg and "move it aside" in msg


class _Named:
    """An object a checkpoint may carry, pickled by its module's name."""


def test_a_run_folder_in_training_is_refused_to_a_second_trainer(tmp_path: Path) -> None:
    """Two trainers on one folder (a study rerun while its killed parent's workers went
    on) would write the same checkpoints: the second is refused in one sentence."""
    import os

    from braintumor.errors import InputError
    from braintumor.training.trainer import lock_run_folder

    out = tmp_path / "r"
    out.mkdir()
    held = lock_run_folder(out)  # as another process training it
    try:
        with pytest.raises(InputError, match=rf"{out} is being trained by another process "
                                             rf"\(pid {os.getpid()}\)"):
            Trainer(_small(epochs=1), out, device="cpu", progress=False).fit()
        assert not (out / "last.pt").exists()
    finally:
        held.close()
    Trainer(_small(epochs=1), out, device="cpu", progress=False).fit()  # free again
    assert (out / "last.pt").exists()


def test_the_temporaries_of_checkpoint_saves_killed_before_are_removed(tmp_path: Path) -> None:
    """A save killed hard (SIGKILL, out of memory) leaves its checkpoint-sized temporary
    file: the next trainer on the folder, holding its lock, removes those of its
    checkpoints; other files stay, and a folder another trainer holds is left as it is
    (its temporaries may be that trainer's saves under way)."""
    from braintumor.errors import InputError
    from braintumor.training.trainer import lock_run_folder

    out = tmp_path / "r"
    out.mkdir()
    left = [out / ".last.4242-4243-a1b2c3.part.pt", out / ".best.17-18-00ff00.part.pt"]
    kept = [out / ".notes.part.txt", out / "last.part.pt", out / ".other.1-2-abcdef.part.pt"]
    for f in left + kept:
        f.write_bytes(b"x" * 1000)
    held = lock_run_folder(out)  # as another process training it
    try:
        with pytest.raises(InputError, match="is being trained by another process"):
            Trainer(_small(epochs=1), out, device="cpu", progress=False).fit()
    finally:
        held.close()
    assert all(f.exists() for f in left + kept)
    Trainer(_small(epochs=1), out, device="cpu", progress=False).fit()
    assert not any(f.exists() for f in left)
    assert all(f.exists() for f in kept)
    assert (out / "last.pt").exists()


@pytest.mark.parametrize("err", ["ENOLCK", "EINVAL", "EOPNOTSUPP", "EBADF"])
def test_a_run_folder_that_takes_no_lock_is_trained_unlocked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        err: str) -> None:
    """A file system without locks (NFS without its lock service) is no other trainer:
    the run goes on without the lock, said in a note."""
    import errno
    import fcntl
    import os

    from braintumor.training.trainer import lock_run_folder

    def no_lock(fd: object, op: int) -> None:
        raise OSError(getattr(errno, err), os.strerror(getattr(errno, err)))

    monkeypatch.setattr(fcntl, "flock", no_lock)
    assert lock_run_folder(tmp_path) is None
    said = capsys.readouterr().err
    assert "does not support file locks" in said and "trained by another" not in said


def test_a_run_folder_held_elsewhere_is_refused_whatever_errno_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """EACCES is how some systems say the lock is held: still a refusal."""
    import errno
    import fcntl

    from braintumor.errors import InputError
    from braintumor.training.trainer import lock_run_folder

    def held(fd: object, op: int) -> None:
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(fcntl, "flock", held)
    with pytest.raises(InputError, match="is being trained by another process"):
        lock_run_folder(tmp_path)


@pytest.mark.parametrize("signame, status", [("SIGINT", 130), ("SIGTERM", 143)])
def test_an_interrupted_run_says_where_its_checkpoint_is(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        signame: str, status: int) -> None:
    """Ctrl-C or SIGTERM after the first epoch: one line with the checkpoint and the
    command that resumes the run, the signal's exit status, no traceback."""
    import os
    import signal

    write_log = Trainer._write_log

    def then_signal(self: Trainer, history: list) -> None:
        write_log(self, history)
        os.kill(os.getpid(), getattr(signal, signame))

    monkeypatch.setattr(Trainer, "_write_log", then_signal)
    before = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "r"
    assert main(["train", "--config", str(SMOKE), "--out", str(out), "--no-progress",
                 "--set", "epochs=5"]) == status
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"interrupted ({signame}) after epoch 1/5: checkpoint {out / 'last.pt'}" in err
    assert (f"resume with: braintumor train --config {SMOKE} --out {out} --no-progress "
            "--set epochs=5") in err
    assert torch.load(out / "last.pt", weights_only=False)["epoch"] == 1
    assert signal.getsignal(signal.SIGTERM) == before  # the handlers are put back


def _save_3d(out: Path, name: str, epoch: int) -> None:
    from types import SimpleNamespace

    Trainer._save(SimpleNamespace(out=out), name, {"epoch": epoch})  # type: ignore[arg-type]


def _save_2d(out: Path, name: str, epoch: int) -> None:
    from types import SimpleNamespace

    from braintumor.training2d import _checkpoint

    net = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    cfg = SimpleNamespace(to_dict=lambda: {})
    _checkpoint(out / name, net, opt, sched, epoch, cfg,  # type: ignore[arg-type]
                np.random.default_rng(0), [])


@pytest.mark.parametrize(("save", "stamp", "old_temp"), [
    (_save_3d, "epoch", ".best.pt.tmp"), (_save_2d, "step", "best.tmp")])
def test_a_checkpoint_save_cut_short_leaves_the_earlier_one_and_no_partial(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, save: Any, stamp: str,
        old_temp: str) -> None:
    """A save that fails part-way (a full disk) leaves the earlier checkpoint as it was
    and no temporary file; a temporary file of the name the writers used to share (another
    trainer's in a folder that takes no lock, or a crashed one's) is neither written nor
    renamed into place."""
    save(tmp_path, "best.pt", 1)
    theirs = tmp_path / old_temp
    theirs.write_bytes(b"another trainer's")
    real = torch.save

    def full_disk(obj: object, f: Any, *args: Any, **kw: Any) -> None:
        Path(f).write_bytes(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space"):
        save(tmp_path, "best.pt", 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([old_temp, "best.pt"])
    assert torch.load(tmp_path / "best.pt", weights_only=False)[stamp] == 1
    monkeypatch.setattr(torch, "save", real)
    save(tmp_path, "best.pt", 3)
    assert torch.load(tmp_path / "best.pt", weights_only=False)[stamp] == 3
    assert theirs.read_bytes() == b"another trainer's"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([old_temp, "best.pt"])
