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
