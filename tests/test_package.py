"""Packaging fold models into a shipped model: CV table, postprocessing choice, card."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from braintumor.config import TrainConfig
from braintumor.inference import segment_cnn
from braintumor.phantom import make_case, write_case
from braintumor.training.package import main as package_main
from braintumor.training.trainer import Trainer


@pytest.mark.slow
def test_package_two_folds(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                           monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    for i in range(4):
        write_case(make_case(shape=(40, 48, 32), seed=20 + i, case_id=f"case{i}"), data)
    runs = tmp_path / "runs"
    for k in range(2):
        cfg = TrainConfig(name="pk", network="compact_unet",
                          network_args={"channels": [4, 8, 8, 8]}, data=str(data),
                          cache=str(tmp_path / "cache"), folds=2, fold=k, patch=(32, 32, 32),
                          batch_size=1, steps_per_epoch=2, epochs=1, val_every=1,
                          warmup_steps=1, augment=TrainConfig().augment)
        Trainer(cfg, runs / f"fold{k}", device="cpu", progress=False).fit()
    out = tmp_path / "model"
    rc = package_main(["--runs", str(runs), "--data", str(data), "--probs",
                       str(tmp_path / "probs"), "--fast-probs", str(tmp_path / "fast"),
                       "--report", str(tmp_path / "report"),
                       "--out", str(out), "--version", "pk-test", "--card-copy", ""])
    assert rc == 0
    meta = json.loads((out / "model.json").read_text())
    assert meta["checkpoints"] == ["fold0.pt", "fold1.pt"] and len(meta["onnx"]) == 2
    assert set(meta["cv"]) == {"WT", "TC", "ET"}
    # the fast mode's held-out accuracy is measured with its own predictions
    assert meta["fast"]["members"] == [0] and set(meta["fast"]["cv"]) == {"WT", "TC", "ET"}
    assert len(list((tmp_path / "fast").glob("*.npz"))) == 4
    # every case predicted once, by the fold that held it out
    assert len(list((tmp_path / "probs").glob("*.npz"))) == 4
    card = (out / "MODEL_CARD.md").read_text()
    assert "pk-test" in card and "| WT |" in card and "Not a medical device" in card
    assert "Fast mode" in card
    # a new speed measurement rewrites the card alone, from what packaging left
    (tmp_path / "report" / "timing.json").write_text(json.dumps({"one case": "1.25 s"}))
    (out / "MODEL_CARD.md").unlink()
    assert package_main(["--card-only", "--out", str(out), "--report",
                         str(tmp_path / "report"), "--card-copy", ""]) == 0
    new = (out / "MODEL_CARD.md").read_text()
    assert "- one case: 1.25 s" in new and "pk-test" in new and "| WT |" in new
    # a module run: the user's mistake is one sentence and exit status 2
    assert package_main(["--card-only", "--out", str(tmp_path / "nothing"), "--report",
                         str(tmp_path / "report"), "--card-copy", ""]) == 2
    assert "model.json is missing: package the model first." in capsys.readouterr().err
    case = make_case(shape=(40, 48, 32), seed=99)
    res = segment_cnn(case, model=out, device="cpu")
    assert res.labels.shape == case.shape and res.info["folds"] == 2
    # packed again over it, with an export that disagrees: the packing stops and the
    # folder holds the earlier model as it was, no new weights beside its ONNX files
    import braintumor.inference as inf

    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setattr(inf, "onnx_agreement", lambda *a, **k: 0.5)
    assert package_main(["--runs", str(runs), "--data", str(data), "--probs",
                         str(tmp_path / "probs"), "--fast-probs", str(tmp_path / "fast"),
                         "--report", str(tmp_path / "report"), "--out", str(out),
                         "--version", "pk-test-2", "--card-copy", ""]) != 0
    assert "differ from PyTorch's" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    monkeypatch.undo()
    # held-out maps with test-time mirroring: every case by the fold that held it out,
    # averaged over the recipes (here the same runs twice) and over the 8 flips
    from braintumor.training.tta_maps import main as tta_main

    assert tta_main(["--runs", f"{runs},{runs}", "--data", str(data),
                     "--out", str(tmp_path / "tta")]) == 0
    import numpy as np

    for cid in (f"case{i}" for i in range(4)):
        z = np.load(tmp_path / "tta" / f"{cid}.npz")
        plain = np.load(tmp_path / "probs" / f"{cid}.npz")
        assert int(z["fold"]) == int(plain["fold"])
        p, q = z["probs"].astype(np.float32), plain["probs"].astype(np.float32)
        assert p.shape == q.shape and 0 <= p.min() and p.max() <= 1
        assert not np.allclose(p, q)  # the flips changed the average
    # another sliding window than the training patch, scored without packing anything
    assert package_main(["--runs", str(runs), "--data", str(data), "--probs",
                         str(tmp_path / "w48"), "--report", str(tmp_path / "report48"),
                         "--window", "48", "--fast-overlap", "0", "--score-only"]) == 0
    assert (tmp_path / "report48" / "table.md").exists()
    for cid in (f"case{i}" for i in range(4)):
        w = np.load(tmp_path / "w48" / f"{cid}.npz")["probs"].astype(np.float32)
        q = np.load(tmp_path / "probs" / f"{cid}.npz")["probs"].astype(np.float32)
        assert w.shape == q.shape and not np.allclose(w, q)


@pytest.mark.slow
def test_package_one_member_per_recipe(tmp_path: Path) -> None:
    """Two recipes' fold runs: each case is scored with the average of its two held-out
    predictions, and the listed members (one per recipe) are what ships."""
    data = tmp_path / "data"
    for i in range(4):
        write_case(make_case(shape=(40, 48, 32), seed=40 + i, case_id=f"case{i}"), data)
    roots = []
    for name, folds in (("a", 2), ("b", 4)):
        for k in [*range(folds), -1]:
            cfg = TrainConfig(name=name, network="compact_unet",
                              network_args={"channels": [4, 8, 8, 8]}, data=str(data),
                              cache=str(tmp_path / "cache"), folds=folds, fold=k,
                              patch=(32, 32, 32), batch_size=1, steps_per_epoch=1, epochs=1,
                              val_every=1, warmup_steps=1, seed=k + 5)
            if k < 0 and name == "a":
                continue
            Trainer(cfg, tmp_path / name / (f"fold{k}" if k >= 0 else "full"), device="cpu",
                    progress=False).fit()
        roots.append(str(tmp_path / name))
    out = tmp_path / "model"
    rc = package_main(["--runs", ",".join(roots), "--data", str(data),
                       "--probs", str(tmp_path / "probs"),
                       "--fast-probs", str(tmp_path / "fast"), "--report", str(tmp_path / "rep"),
                       "--members", f"{roots[0]}/fold1,{roots[1]}/full", "--fast-member", "1",
                       "--fast-root", "1", "--recipe", "ra.yaml,rb.yaml",
                       "--out", str(out), "--version", "mix-test", "--card-copy", "",
                       "--no-onnx"])
    assert rc == 0
    import numpy as np

    for i in range(4):
        avg = np.load(tmp_path / "probs" / f"case{i}.npz")
        parts = [np.load(tmp_path / "probs" / f"root{r}" / f"case{i}.npz")["probs"]
                 for r in (0, 1)]
        want = (parts[0].astype(np.float32) + parts[1].astype(np.float32)) / 2
        assert np.abs(avg["probs"].astype(np.float32) - want).max() < 2e-3
        # the fold recorded is the last recipe's (4 folds: one case each)
        assert int(avg["fold"]) in range(4)
    assert sorted(int(np.load(tmp_path / "probs" / f"case{i}.npz")["fold"])
                  for i in range(4)) == [0, 1, 2, 3]
    meta = json.loads((out / "model.json").read_text())
    assert meta["checkpoints"] == ["member0.pt", "member1.pt"]
    assert meta["fast"]["members"] == [1]
    assert [m["fold"] for m in meta["training"]["member_runs"]] == [1, -1]
    card = (out / "MODEL_CARD.md").read_text()
    assert "average of one held-out model per recipe" in card and "all 4 cases" in card
    res = segment_cnn(make_case(shape=(40, 48, 32), seed=98), model=out, device="cpu",
                      fast=True)
    assert res.info["folds"] == 1
    # --score-only: the held-out table of recipes that are not shipped, nothing packed
    rc = package_main(["--runs", ",".join(roots), "--data", str(data),
                       "--probs", str(tmp_path / "probs2"), "--fast-overlap", "0",
                       "--report", str(tmp_path / "rep2"), "--out", str(tmp_path / "none"),
                       "--score-only"])
    assert rc == 0 and not (tmp_path / "none").exists()
    summary = json.loads((tmp_path / "rep2" / "summary.json").read_text())
    assert set(summary["regions"]) == {"WT", "TC", "ET"} and "fast" not in summary
    table = (tmp_path / "rep2" / "table.md").read_text()
    assert all(f"| case{i} |" in table for i in range(4)) and "Fast mode" not in table
    with pytest.raises(SystemExit):  # several recipes to ship need their members
        package_main(["--runs", ",".join(roots), "--data", str(data), "--probs",
                      str(tmp_path / "probs3"), "--out", str(tmp_path / "none")])


def test_the_cards_agree_with_the_readme_and_their_template() -> None:
    """The repository's model card is the packaged one, carries the template's fixed
    text, and its 2D cross-validation block is the README's (from the 2D card)."""
    from braintumor.training.package import CARD_STATIC

    root = Path(__file__).resolve().parents[1]
    models = root / "src" / "braintumor" / "models"
    card = (root / "MODEL_CARD.md").read_text()
    assert card == (models / "brats3d" / "MODEL_CARD.md").read_text()
    assert CARD_STATIC.strip() in card

    def block(text: str) -> str:
        start, end = text.index("<!-- cv-table -->"), text.index("<!-- /cv-table -->")
        return text[start:end]

    readme = block((root / "README.md").read_text())
    assert block(card) == readme
    assert block((models / "lgg2d" / "MODEL_CARD_2D.md").read_text()) == readme


def test_the_readme_command_block_names_every_option_of_the_help() -> None:
    """Each sub-command's line in the README's Command line block names every option its
    ``--help`` lists, and every option has a help text."""
    import argparse
    import re

    from braintumor.cli import build_parser

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("## Command line", 1)[1].split("```")[1]
    lines = {ln.split()[1]: ln for ln in block.splitlines() if ln.startswith("braintumor ")}
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert sorted(lines) == sorted(sub.choices)
    missing = []
    for name, parser in sub.choices.items():
        for action in parser._actions:
            if not action.option_strings or action.help == argparse.SUPPRESS \
                    or isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"{name} {action.option_strings[-1]} has no help text"
            if not any(re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", lines[name])
                       for o in action.option_strings):
                missing.append(f"{name} {action.option_strings[-1]}")
    assert not missing, f"options of --help missing from the README's block: {missing}"


def test_packed_members_onnx_is_checked_and_a_disagreeing_one_stops_packing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Packing exported each member to ONNX unchecked (only the export-onnx command
    compared it with PyTorch), and an export that was not written would still have been
    listed in model.json; now it is checked, and one that disagrees stops the packing in
    one sentence."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    import torch

    import braintumor.inference as inf
    from braintumor.config import to_dict
    from braintumor.errors import BrainTumorError
    from braintumor.networks import create_network
    from braintumor.training.package import _export_member

    cfg = TrainConfig(network="compact_unet", network_args={"channels": [4, 8, 8, 8]},
                      patch=(32, 32, 32))
    pt = tmp_path / "fold0.pt"
    torch.save({"model": create_network("compact_unet", channels=(4, 8, 8, 8)).state_dict(),
                "config": to_dict(cfg)}, pt)
    seen: list[float | None] = []
    real = inf.onnx_agreement

    def agreement(*a: object, **k: object) -> float | None:
        seen.append(real(*a, **k))  # type: ignore[arg-type]
        return seen[-1]

    monkeypatch.setattr(inf, "onnx_agreement", agreement)
    assert _export_member(pt) == "fold0.onnx" and (tmp_path / "fold0.onnx").is_file()
    assert len(seen) == 1 and seen[0] is not None and seen[0] <= inf.ONNX_TOLERANCE
    (tmp_path / "fold0.onnx").unlink()
    monkeypatch.setattr(inf, "onnx_agreement", lambda *a, **k: 0.5)
    with pytest.raises(BrainTumorError, match=r"fold0.pt: its ONNX export's probabilities "
                                              r"differ from PyTorch's by up to 0.5.*--no-onnx"):
        _export_member(pt)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fold0.pt"]
