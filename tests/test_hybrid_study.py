"""The hybrid study's leave-fold-out choice of refinement (pure bookkeeping, no images)."""

from __future__ import annotations

import numpy as np

from braintumor.hybrid_study import candidates, params_for, select
from braintumor.watershed import hybrid_params


def _tuning(cnn: float, gain: dict[str, list[float]]) -> dict:
    """One case: CNN Dice ``cnn`` in every region; candidate k for region r adds
    ``gain[r][k]`` to every region's Dice."""
    n = len(candidates())
    return {"cnn": dict.fromkeys(("WT", "TC", "ET"), cnn),
            "candidates": {r: [dict.fromkeys(("WT", "TC", "ET"), cnn + gain[r][k])
                               for k in range(n)] for r in ("WT", "TC", "ET")}}


def test_select_keeps_only_refinements_that_helped_the_training_cases() -> None:
    n = len(candidates())
    helps = [0.0] * n
    helps[3] = 0.02
    hurts = [-0.01] * n
    tiny = [0.0005] * n
    train = {f"c{i}": _tuning(0.8, {"WT": helps, "TC": hurts, "ET": tiny}) for i in range(4)}
    # a held-out case where WT refinement would hurt: the choice must not look at it
    test = {"t": _tuning(0.8, {"WT": [-0.5] * n, "TC": [0.5] * n, "ET": [0.5] * n})}
    sel = select({**train, **test}, list(train))
    assert sel["per_region"]["WT"] == candidates()[3]
    assert sel["per_region"]["TC"] is None and sel["per_region"]["ET"] is None
    assert np.isclose(sel["gain"]["WT"], 0.02)
    hp = hybrid_params(sel["params"])
    assert hp.regions == ("WT",)
    assert hp.band("WT") == (candidates()[3]["sure_out"], candidates()[3]["sure_in"])


def test_nothing_chosen_is_the_cnn_alone() -> None:
    hp = hybrid_params(params_for({"WT": None, "TC": None, "ET": None}))
    assert hp.regions == ()


def test_a_tie_between_adoption_thresholds_goes_to_the_strictest() -> None:
    """When the training cases cannot tell two adoption thresholds apart (no lesion's CNN
    support lies between them), the rule asking the CNN for the most support wins: a
    held-out case with a weakly supported false core must not be adopted by chance."""
    from braintumor.hybrid_study import fusion_candidates, select_fusion

    cands = fusion_candidates()

    def dice(rule: dict[str, object]) -> dict[str, float]:
        good = (rule["wt_from"] == "touching" and rule["wt_veto"] == 0.5
                and rule["core"] == "clip" and float(rule["core_adopt"]) > 0  # type: ignore[arg-type]
                and rule["core_cover"] == 0.5 and rule["et_adopt"] == 0.05)
        return {"WT": 0.8, "TC": 0.8 if good else 0.7, "ET": 0.7}

    dices = {c: [dice(r) for r in cands] for c in ("a", "b", "c")}
    chosen = select_fusion(dices, ["a", "b", "c"])["rule"]
    assert chosen["core_adopt"] == 0.5 and chosen["core_cover"] == 0.5
    # and among ET thresholds, the stricter probability first
    et = [r["et_adopt"] for r in cands if r["core_adopt"] == 0.5 and r["core_cover"] == 0.5
          and r["wt_from"] == "touching" and r["wt_veto"] == 0.5]
    assert et == [0.0, 0.2, 0.05]
