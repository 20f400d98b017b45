"""How sure a mean over a few cases is, and whether one method beats another on them.

Segmentation results here come from 14 BraTS cases or 24 LGG patients, where one case
moves a mean Dice by several hundredths. Two numbers say how far to trust a result:

* :func:`mean_ci`: the mean over cases with a bootstrap confidence interval (BCa,
  ``scipy.stats.bootstrap``; percentile where BCa is undefined, e.g. one value repeated);
* :func:`paired`: two methods scored on the same cases, the mean of their per-case
  differences with its bootstrap interval, the Wilcoxon signed-rank test (two-sided)
  and how many cases each wins. Tied cases (no difference) carry no sign, so the test
  runs over the others (:func:`signed_rank_p`: exact, from the distribution of the
  statistic over every sign flip, midranks for equal differences) and its ``n`` counts
  only them: with n such cases p cannot fall below 2 / 2^n.

The resampling is seeded, so a table is the same on every run. ``python -m
braintumor.stats CSV`` prints both for a per-case results file of the studies
(long: ``case, [method], region, dice, ...``; wide: ``case, WT_dice, ...``).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from braintumor.errors import InputError, guarded

LEVEL = 0.95
RESAMPLES = 9999
SEED = 0
#: below this many cases an interval is rough (a bootstrap interval of fewer values is
#: too narrow) and so is the Wilcoxon p (it cannot fall below 2 / 2^n)
ROUGH_BELOW = 10
#: untied pairs up to which the signed-rank p is exact (above: normal approximation)
EXACT_MAX = 400
#: metrics where a lower value is better (the rest: higher is better)
LOWER_IS_BETTER = frozenset({"hd95", "lesion_hd95", "seconds", "spd_diff_pct", "lesion_fp",
                             "lesion_fn", "fp_slices", "missed_slices", "fp_rate"})


@dataclass(frozen=True)
class MeanCI:
    """Mean over ``n`` cases and its confidence interval (``low``, ``high``)."""

    mean: float
    low: float
    high: float
    n: int

    def text(self, digits: int = 3) -> str:
        if not math.isfinite(self.mean):
            return "-"
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


@dataclass(frozen=True)
class Paired:
    """Method A against method B on the same cases, for one region and metric.

    ``cases`` is how many cases both have; ``diff`` the mean of A - B over them, with
    its interval (``low``, ``high``); ``wins``/``losses`` count the cases where A is
    better/worse by more than ``tol`` (for HD95 and time, lower is better), ``ties`` the
    rest. ``p`` is the two-sided Wilcoxon signed-rank p-value over the ``n`` untied
    cases (``wins + losses``; 1.0 when every case ties), exact for up to
    :data:`EXACT_MAX` of them.
    """

    region: str
    metric: str
    cases: int
    n: int
    mean_a: float
    mean_b: float
    diff: float
    low: float
    high: float
    p: float
    wins: int
    ties: int
    losses: int

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


def _finite(values: Iterable[float]) -> np.ndarray:
    a = np.asarray([float(v) for v in values], dtype=float)
    return a[np.isfinite(a)]


def _interval(a: np.ndarray, level: float, n_resamples: int, seed: int) -> tuple[float, float]:
    from scipy import stats

    if a.size < 2:
        return math.nan, math.nan
    if np.all(a == a[0]):
        return float(a[0]), float(a[0])
    rng = np.random.default_rng(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.bootstrap((a,), np.mean, confidence_level=level, n_resamples=n_resamples,
                              method="BCa", random_state=rng)
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            res = stats.bootstrap((a,), np.mean, confidence_level=level,
                                  n_resamples=n_resamples, method="percentile",
                                  random_state=np.random.default_rng(seed))
            lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return lo, hi


def mean_ci(values: Iterable[float], level: float = LEVEL, n_resamples: int = RESAMPLES,
            seed: int = SEED) -> MeanCI:
    """Mean of the finite ``values`` with a ``level`` bootstrap interval (BCa).

    Fewer than two values give no interval (NaN bounds); identical values give the
    value itself as both bounds.
    """
    a = _finite(values)
    if a.size == 0:
        return MeanCI(math.nan, math.nan, math.nan, 0)
    lo, hi = _interval(a, level, n_resamples, seed)
    return MeanCI(float(a.mean()), lo, hi, int(a.size))


def signed_rank_p(d: Iterable[float]) -> float:
    """Two-sided p of the Wilcoxon signed-rank test of the differences ``d`` (zeros
    dropped: a tie says nothing about the sign).

    Exact up to :data:`EXACT_MAX` differences: the statistic (sum of the ranks of the
    positive differences, midranks for equal magnitudes) against its distribution over
    all 2^n sign flips, so equal magnitudes need no correction and the p of n
    differences of one sign is exactly 2 / 2^n. Above that, the normal approximation
    with the tie correction (``scipy.stats.wilcoxon``).
    """
    from scipy import stats

    a = np.asarray(list(d), dtype=float)
    a = a[np.isfinite(a) & (a != 0)]
    n = int(a.size)
    if n == 0:
        return 1.0
    if n > EXACT_MAX:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(stats.wilcoxon(a, zero_method="wilcox", method="approx").pvalue)
    # doubled midranks are whole numbers: the statistic's distribution is a count per sum
    ranks = np.rint(2 * stats.rankdata(np.abs(a))).astype(np.int64)
    total = int(ranks.sum())
    dist: np.ndarray = np.zeros(total + 1)
    dist[0] = 1.0
    for r in ranks:  # each rank is added (positive) or not (negative), each with odds 1/2
        shifted = np.zeros_like(dist)
        shifted[r:] = dist[:total + 1 - r]
        dist = 0.5 * (dist + shifted)
    t = int(ranks[a > 0].sum())
    # two-sided: every sign pattern at least as far from the centre (total / 2)
    far = np.abs(2 * np.arange(total + 1) - total) >= abs(2 * t - total)
    return float(min(1.0, dist[far].sum()))


def paired(a: Mapping[str, float], b: Mapping[str, float], region: str = "",
           metric: str = "dice", tol: float = 1e-4, level: float = LEVEL,
           n_resamples: int = RESAMPLES, seed: int = SEED) -> Paired:
    """Compare per-case values ``a`` and ``b`` (case id -> value) on the cases both score.

    Cases within ``tol`` of each other tie: they count in the mean difference and its
    interval, not in the signed-rank test nor its ``n`` (:func:`signed_rank_p`).
    Raises :class:`InputError` when they share no case.
    """
    common = sorted(c for c in a if c in b and math.isfinite(float(a[c]))
                    and math.isfinite(float(b[c])))
    if not common:
        raise InputError(f"The two result sets share no scored case for {region} {metric}.")
    va = np.array([float(a[c]) for c in common])
    vb = np.array([float(b[c]) for c in common])
    d = va - vb
    lo, hi = _interval(d, level, n_resamples, seed)
    better = -d if metric in LOWER_IS_BETTER else d
    wins = int(np.sum(better > tol))
    losses = int(np.sum(better < -tol))
    p = signed_rank_p(d[np.abs(d) > tol])
    return Paired(region=region, metric=metric, cases=len(common), n=wins + losses,
                  mean_a=float(va.mean()), mean_b=float(vb.mean()), diff=float(d.mean()),
                  low=lo, high=hi, p=p, wins=wins, ties=len(common) - wins - losses,
                  losses=losses)


def rough_note(cases: int | None, untied: int | None = None) -> str:
    """One sentence saying why results over few cases are rough: intervals over fewer
    than :data:`ROUGH_BELOW` ``cases``, a Wilcoxon p over fewer than that many
    ``untied`` pairs (its floor is 2 / 2^n); empty when neither applies. ``cases`` None:
    the intervals were already said of (the Wilcoxon part only)."""
    parts = []
    if cases is not None and cases < ROUGH_BELOW:
        parts.append(f"a bootstrap interval over {cases} case{'s' * (cases != 1)} is too "
                     f"narrow (below about {ROUGH_BELOW} cases)")
    if untied is not None and untied < ROUGH_BELOW:
        floor = f"{2 / 2 ** untied:.3g}" if untied else "1"
        what = f"{untied} untied case{'s' * (untied != 1)}"
        parts.append(f"the Wilcoxon p over {what} cannot fall below {floor}")
    if not parts:
        return ""
    return "These are rough: " + ", and ".join(parts) + "."


# ---------------------------------------------------------------- per-case tables

#: (case, region, metric) -> value
Scores = dict[tuple[str, str, str], float]


def scores_from_rows(rows: Iterable[Mapping[str, Any]], method: str | None = None,
                     method_key: str = "method") -> Scores:
    """Per-case scores from CSV rows, long (``case, region, dice, ...``) or wide
    (``case, WT_dice, ...``); summary rows (case ``mean``/``median``) are skipped."""
    out: Scores = {}
    for r in rows:
        case = str(r.get("case", ""))
        if not case or case in ("mean", "median"):
            continue
        if method is not None and str(r.get(method_key, "")) != method:
            continue
        if "region" in r and r["region"]:
            for k, v in r.items():
                if k in ("case", "region", method_key, "fold", "status"):
                    continue
                val = _num(v)
                if val is not None:
                    out[(case, str(r["region"]), k)] = val
        else:
            for k, v in r.items():
                if "_" not in k:
                    continue
                region, metric = k.split("_", 1)
                val = _num(v)
                if val is not None and region.isupper():
                    out[(case, region, metric)] = val
    return out


def _num(v: Any) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x


def read_scores(path: str | Path, method: str | None = None,
                method_key: str = "method") -> Scores:
    """:func:`scores_from_rows` of a CSV file; one clear error for a file that is not one."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such results file.")
    try:
        with p.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (UnicodeDecodeError, csv.Error) as e:
        raise InputError(f"{p} is not a readable CSV file ({e}).") from None
    columns = set(rows[0]) if rows else set()
    if method_key == "method" and "method" not in columns and "run" in columns:
        method_key = "run"  # a study's per-case table names its rows by run
    if method is None and method_key in columns:
        names = list(dict.fromkeys(str(r.get(method_key, "")) for r in rows
                                   if str(r.get("case", "")) not in ("", "mean", "median")))
        if len(names) > 1:
            raise InputError(f"{p} holds the results of several {method_key}s "
                             f"({', '.join(names)}); choose one with --method.")
    out = scores_from_rows(rows, method, method_key)
    if not out:
        what = f" for method {method!r}" if method else ""
        raise InputError(f"{p} holds no per-case scores{what} (expected columns case, "
                         "region, dice, ... or case, WT_dice, ...).")
    return out


def regions_metrics(scores: Scores) -> tuple[list[str], list[str]]:
    regions: list[str] = []
    metrics: list[str] = []
    for _, r, m in scores:
        if r not in regions:
            regions.append(r)
        if m not in metrics:
            metrics.append(m)
    return regions, metrics


def column(scores: Scores, region: str, metric: str) -> dict[str, float]:
    """case -> value for one region and metric."""
    return {c: v for (c, r, m), v in scores.items() if r == region and m == metric}


def summary_ci(scores: Scores, regions: Sequence[str], metrics: Sequence[str]
               ) -> dict[str, dict[str, MeanCI]]:
    """region -> metric -> :class:`MeanCI` over the cases."""
    return {r: {m: mean_ci(column(scores, r, m).values()) for m in metrics} for r in regions}


def compare(a: Scores, b: Scores, regions: Sequence[str], metrics: Sequence[str]
            ) -> list[Paired]:
    """:func:`paired` for every region and metric both score."""
    out = []
    for r in regions:
        for m in metrics:
            ca, cb = column(a, r, m), column(b, r, m)
            if ca and cb and set(ca) & set(cb):
                out.append(paired(ca, cb, r, m))
    return out


def fmt_p(p: float) -> str:
    if not math.isfinite(p):
        return "-"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def paired_markdown(rows: Sequence[Paired], name_a: str, name_b: str) -> str:
    """A Markdown table of :func:`compare`'s rows."""
    lines = [f"| region | metric | {name_a} | {name_b} | difference [95% CI] | "
             f"Wilcoxon p | cases better / equal / worse |",
             "|---|---|---|---|---|---|---|"]
    for p in rows:
        digits = 2 if p.metric in LOWER_IS_BETTER else 3
        ci = (f" [{p.low:+.{digits}f}, {p.high:+.{digits}f}]"
              if math.isfinite(p.low) and math.isfinite(p.high) else "")
        lines.append(f"| {p.region} | {p.metric} | {p.mean_a:.{digits}f} | "
                     f"{p.mean_b:.{digits}f} | {p.diff:+.{digits}f}{ci} | {fmt_p(p.p)} | "
                     f"{p.wins} / {p.ties} / {p.losses} |")
    return "\n".join(lines)


def ci_markdown(cis: Mapping[str, Mapping[str, Mapping[str, MeanCI]]],
                metrics: Sequence[str]) -> str:
    """name -> region -> metric -> CI as a Markdown table (mean [95% CI] per cell)."""
    lines = ["| results | region | n | " + " | ".join(metrics) + " |",
             "|---|---|---|" + "---|" * len(metrics)]
    for name, by_region in cis.items():
        for region, by_metric in by_region.items():
            n = max((c.n for c in by_metric.values()), default=0)
            cells = [by_metric[m].text(2 if m in LOWER_IS_BETTER else 3)
                     if m in by_metric else "-" for m in metrics]
            lines.append(f"| {name} | {region} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


@guarded
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m braintumor.stats",
        description="Mean with a 95% bootstrap interval per region and metric of a per-case "
                    "results CSV; with --baseline, the paired comparison of two methods.")
    ap.add_argument("csv", type=Path, help="per-case results (long or wide)")
    ap.add_argument("--method", default=None, help="rows of this method (long CSVs with a "
                    "method column)")
    ap.add_argument("--baseline", default=None, metavar="METHOD_OR_CSV",
                    help="the method (in the same CSV) or another CSV to compare against")
    ap.add_argument("--method-key", default="method",
                    help="column naming the method (default: method, else a study's run)")
    ap.add_argument("--metrics", default="dice,hd95", help="comma-separated (default dice,hd95)")
    args = ap.parse_args(argv)
    try:
        a = read_scores(args.csv, args.method, args.method_key)
        regions, present = regions_metrics(a)
        metrics = [m for m in args.metrics.split(",") if m in present]
        if not metrics:
            raise InputError(f"{args.csv} has none of the metrics {args.metrics}.")
        name_a = args.method or args.csv.stem
        cis = {name_a: summary_ci(a, regions, metrics)}
        rows: list[Paired] = []
        name_b = ""
        if args.baseline:
            if args.baseline.endswith(".csv"):
                b = read_scores(args.baseline)
                name_b = Path(args.baseline).stem
            else:
                b = read_scores(args.csv, args.baseline, args.method_key)
                name_b = args.baseline
            cis[name_b] = summary_ci(b, regions, metrics)
            rows = compare(a, b, regions, metrics)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(ci_markdown(cis, metrics))
    counts = [c.n for by_region in cis.values() for by_metric in by_region.values()
              for c in by_metric.values() if c.n]
    note = rough_note(min(counts, default=0))
    if rows:
        print()
        print(paired_markdown(rows, name_a, name_b))
        note = rough_note(min(min(counts, default=0), min(p.cases for p in rows)),
                          min(p.n for p in rows))
    if note:
        print()
        print(note)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
