"""The papers' claims checked on MiniCity over seeds: each claim compares two measures taken on the same seeds (the
same source model) and gets a verdict read from the numbers, with the reason the numbers give.

A claim *holds on MiniCity* when the claimed winner is ahead on the mean paired difference and on at least all seeds
but one (the rule of :func:`udalib.results.claim_verdicts`); otherwise it *does not hold*; a claim whose rows are
not in the table is *not measured*. A side of a claim is a row of a benchmark table (``method``, ``seed``,
``steps``, ``target_miou``, ``teacher_miou``, ``iou_<class>`` ...) at a number of steps, read as its target mIoU,
its teacher's mIoU or the mean IoU of some classes; a claim against two sides is against the better of the two on
each seed (:func:`udalib.zoo.margin_over_controls`: a method against max(AdaBN, its lambda = 0 control)).

``verdicts(df, claims)`` gives the table; ``markdown(table)`` the text a notebook and ``benchmarks/RESULTS.md``
show. Notebook 09 and ``benchmarks/write_results.py`` read :data:`MEAN_TEACHER_TABLE` with
:data:`MEAN_TEACHER_CLAIMS`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from .zoo import MEAN_TEACHER_SCORE

MEAN_TEACHER_TABLE = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "minicity_mean_teacher.csv"
HOLDS, FAILS, UNMEASURED = "holds on MiniCity", "does not hold", "not measured"


@dataclass(frozen=True)
class Side:
    """One side of a claim: the rows of ``method`` trained for ``steps`` steps (``None``: all of its rows, one per
    seed: a row that does not train, such as AdaBN), read as ``column``, or as the mean IoU of ``classes`` (the
    table's ``iou_<class>`` columns) when they are given."""

    method: str
    steps: int | None = None
    column: str = "target_miou"
    classes: tuple[str, ...] = ()

    def rows(self) -> str:
        """The table rows this side reads: ``"dacs (60 steps)"``."""
        return self.method + (f" ({self.steps} steps)" if self.steps is not None else "")

    def label(self) -> str:
        text = self.rows()
        if self.classes:
            return f"{text}, IoU of {', '.join(self.classes)}"
        return text + {"teacher_miou": ", its teacher", "target_miou_target_bn": ", target BN"}.get(self.column, "")

    def values(self, df):
        """Per seed (a Series indexed by seed), or None when the table has no such rows."""
        rows = df[df["method"] == self.method]
        if self.steps is not None:
            rows = rows[rows["steps"] == self.steps]
        columns = [f"iou_{c.replace(' ', '_')}" for c in self.classes] or [self.column]
        if rows.empty or not all(c in rows.columns for c in columns):
            return None
        if rows["seed"].duplicated().any():
            raise ValueError(f"{self.label()}: several rows per seed (steps {sorted(set(rows['steps']))}); "
                             "name the steps of this side")
        values = rows.set_index("seed")[columns].mean(axis=1, skipna=False).dropna()
        return values if len(values) else None


@dataclass(frozen=True)
class Claim:
    """``winner`` > ``beaten`` on the same seeds; with two beaten sides, > the better of the two on each seed."""

    name: str
    paper: str
    winner: Side
    beaten: tuple[Side, ...]


def _over_seeds(values) -> dict:
    """``values`` (a Series indexed by seed) through :func:`udalib.results.over_seeds`, the one grouping over seeds:
    its mean, std, n and seeds ahead (above 0)."""
    import pandas as pd

    from .results import over_seeds

    frame = pd.DataFrame({"row": "claim", "seed": values.index, "value": values.to_numpy()})
    return over_seeds(frame, "value", "row").iloc[0].to_dict()


def _pm(values) -> str:
    s = _over_seeds(values)
    return f"{s['mean']:.1f} ± {s['std']:.1f}" if s["n"] > 1 else f"{s['mean']:.1f}"


MIN_SEEDS = 3  # fewer shared seeds: not measured (the atlas's three seeds; the tables' five)


def verdict(df, claim: Claim, min_seeds: int = MIN_SEEDS) -> dict:
    """One claim checked on ``df``: both sides' mean ± std over the shared seeds, the paired difference (mean and
    std), the seeds on which the winner is ahead, the verdict and its reason, in words with the numbers. A claim
    whose sides share fewer than ``min_seeds`` seeds is not measured."""
    from .zoo import margin_over_controls

    beaten_label = " / ".join(s.label() for s in claim.beaten)
    if len(claim.beaten) == 2:
        beaten_label = f"max({beaten_label})"
    row = {"paper": claim.paper, "winner": claim.winner.label(), "beaten": beaten_label, "winner mIoU": "",
           "beaten mIoU": "", "difference": math.nan, "± std": math.nan, "seeds ahead": "", "verdict": UNMEASURED}
    sides = [claim.winner, *claim.beaten]
    values = [s.values(df) for s in sides]
    missing = list(dict.fromkeys(s.rows() for s, v in zip(sides, values) if v is None))
    if missing:
        return row | {"reason": f"no rows of {', '.join(missing)} in the table"}
    import pandas as pd

    both = pd.concat(values, axis=1, join="inner")
    if len(both) < min_seeds:
        return row | {"reason": f"{len(both)} seed{'s' if len(both) != 1 else ''} in the table, {min_seeds} needed"}
    win, lose = both.iloc[:, 0], both.iloc[:, 1]
    if len(claim.beaten) == 2:  # the better of the two on each seed
        lose = win - margin_over_controls(win, both.iloc[:, 1], both.iloc[:, 2])
    s = _over_seeds(win - lose)
    n, ahead, mean, std = int(s["n"]), int(s["ahead"]), float(s["mean"]), float(s["std"])
    holds = mean > 0 and ahead >= max(n - 1, 1)
    spread = f" ± {std:.1f}" if n > 1 else ""
    if holds:
        reason = f"ahead on {ahead} of {n} seeds, by {mean:+.1f}{spread} points"
    elif mean <= 0:
        reason = (f"behind by {-mean:.1f}{spread} points on average, ahead on {ahead} of {n} seeds")
    else:
        reason = (f"ahead by {mean:+.1f}{spread} points on average but on only {ahead} of {n} seeds: the difference "
                  "is within the spread over seeds")
    return row | {"winner mIoU": _pm(win), "beaten mIoU": _pm(lose), "difference": round(mean, 2),
                  "± std": round(std, 2), "seeds ahead": f"{ahead}/{n}", "verdict": HOLDS if holds else FAILS,
                  "reason": reason}


def verdicts(df=None, claims=None, min_seeds: int = MIN_SEEDS):
    """Every claim of ``claims`` (default :data:`MEAN_TEACHER_CLAIMS`) checked on ``df`` (default: the mean-teacher
    table, :data:`MEAN_TEACHER_TABLE`; absent, every claim is not measured), one row each, in order."""
    import pandas as pd

    claims = MEAN_TEACHER_CLAIMS if claims is None else claims
    if df is None:
        df = (pd.read_csv(MEAN_TEACHER_TABLE) if MEAN_TEACHER_TABLE.is_file()
              else pd.DataFrame(columns=["method", "seed", "steps", "target_miou"]))
    return pd.DataFrame.from_dict({c.name: verdict(df, c, min_seeds) for c in claims}, orient="index")


def markdown(table, reasons: bool = True) -> str:
    """A verdict table as Markdown: claim, paper, the two sides (mean ± std over seeds), the paired difference, how
    many seeds put the winner ahead, and the verdict; with ``reasons``, a line per claim that does not hold, saying
    why in the numbers' words, and one line naming the claims not measured and their missing rows."""
    head = ["claim", "paper", "claimed winner", "beaten", "paired difference", "seeds ahead", "verdict"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for claim, r in table.iterrows():
        measured = r["verdict"] != UNMEASURED
        diff = (f"{r['difference']:+.2f}" + (f" ± {r['± std']:.2f}" if not math.isnan(r["± std"]) else "")
                if measured else "")
        cells = [claim, r["paper"], f"`{r['winner']}` {r['winner mIoU']}".strip(),
                 f"`{r['beaten']}` {r['beaten mIoU']}".strip(), diff, r["seeds ahead"], r["verdict"]]
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    if reasons:
        notes = [f"* **{claim}** does not hold: {r['reason']}." for claim, r in table.iterrows()
                 if r["verdict"] == FAILS]
        unmeasured = [f"{claim} ({r['reason']})" for claim, r in table.iterrows() if r["verdict"] == UNMEASURED]
        if unmeasured:
            notes.append(f"* Not measured: {'; '.join(unmeasured)}.")
        if notes:
            text += "\n\n" + "\n".join(notes)
    return text


# ------------------------------------------------------------------------------------- the mean teacher's claims
# The rows of benchmarks/results/minicity_mean_teacher.csv (60 steps unless named): DACS against the self-training
# rows, its ablations (no ClassMix, alpha = 0), rare-class sampling, MIC on three hosts and at mask ratio 0, DACS
# against its controls, and 60 against 300 steps
_RARE = ("pole", "traffic sign", "person")
_DACS, _MIC, _MT = ("DACS (Tranheden et al., WACV 2021)", "MIC (Hoyer et al., CVPR 2023)",
                    "mean teacher (Tarvainen & Valpola, NeurIPS 2017)")
_CONTROLS = "the course's rule: over max(AdaBN, the λ=0 control) on each seed"
# The mean-teacher rows are compared as benchmarks/mean_teacher_table.py compares them (udalib.zoo.MEAN_TEACHER_SCORE):
# every row's weights scored with BatchNorm statistics re-estimated on target train images (AdaBN's own score), since
# DACS and its controls end training with statistics of mixed images; one claim shows the as-trained score beside it.
# The per-class IoU of the rare-class claim is the as-trained model's, on both sides.
_S, _TRAINED = MEAN_TEACHER_SCORE, "target_miou"
MEAN_TEACHER_CLAIMS = (
    Claim("DACS > CBST", _DACS, Side("dacs", 60, _S), (Side("cbst", 60, _S),)),
    Claim("DACS > MLSL", _DACS, Side("dacs", 60, _S), (Side("mlsl", 60, _S),)),
    Claim("ClassMix > no mixing", _DACS, Side("dacs", 60, _S), (Side("dacs_nomix", 60, _S),)),
    Claim("ClassMix > no mixing, 300 steps", _DACS, Side("dacs", 300, _S), (Side("dacs_nomix", 300, _S),)),
    Claim("the mean teacher > the student as its own teacher (α = 0)", _MT, Side("dacs", 60, _S),
          (Side("dacs_alpha0", 60, _S),)),
    Claim("the teacher > its student", _MT, Side("dacs", 60, "teacher_miou"), (Side("dacs", 60, _S),)),
    Claim("RCS lifts the rare classes (pole, traffic sign, person)", "DAFormer (Hoyer et al., CVPR 2022)",
          Side("dacs_rcs", 60, classes=_RARE), (Side("dacs", 60, classes=_RARE),)),
    Claim("DACS+MIC > DACS", _MIC, Side("dacs_mic", 60, _S), (Side("dacs", 60, _S),)),
    Claim("MinEnt+MIC > MinEnt", _MIC, Side("minent_mic", 60, _S), (Side("minent", 60, _S),)),
    Claim("AdaptSegNet+MIC > AdaptSegNet", _MIC, Side("adaptsegnet_multi_mic", 60, _S),
          (Side("adaptsegnet_multi", 60, _S),)),
    Claim("MIC > MIC at mask ratio 0", _MIC, Side("dacs_mic", 60, _S), (Side("dacs_mic_ratio0", 60, _S),)),
    Claim("DACS > max(AdaBN, its λ=0 control)", _CONTROLS, Side("dacs", 60, _S),
          (Side("adabn", None, _S), Side("control_dacs", 60, _S))),
    Claim("DACS > max(AdaBN, its λ=0 control), as trained", _CONTROLS, Side("dacs", 60, _TRAINED),
          (Side("adabn", None, _TRAINED), Side("control_dacs", 60, _TRAINED))),
    Claim("DACS > max(AdaBN, its λ=0 control), 300 steps", _CONTROLS, Side("dacs", 300, _S),
          (Side("adabn", None, _S), Side("control_dacs", 300, _S))),
    Claim("DACS at 300 steps > DACS at 60 steps", _DACS + ": 250k iterations", Side("dacs", 300, _S),
          (Side("dacs", 60, _S),)),
)
