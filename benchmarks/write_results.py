"""Every measured table of ``README.md`` and ``benchmarks/RESULTS.md``, written from ``benchmarks/results/*.csv``.

Each table sits between two markers in the Markdown file, and only what lies between them is rewritten:

    <!-- results: minicity_table -->
    | run | target mIoU | ... |
    <!-- /results -->

The name after ``results:`` is a key of :data:`TABLES`; each function there reads its CSV and formats it with the
function the benchmark itself uses (``udalib.results.benchmark_summary``, ``claim_verdicts``,
``udalib.crosscity.city_table`` and ``gains``, each benchmark script's summary). ``make results`` runs it;
``tests/test_results_tables.py`` fails when a file differs from what this script writes.

    python benchmarks/write_results.py           # rewrite the blocks of README.md and benchmarks/RESULTS.md
    python benchmarks/write_results.py --check   # change nothing; exit 1 and show the difference if out of date
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the benchmark scripts, for their summaries

RESULTS = HERE / "results"
FILES = (HERE.parent / "README.md", HERE / "RESULTS.md")
BLOCK = re.compile(r"(<!-- results: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /results -->)", re.DOTALL)


def _read(name: str) -> pd.DataFrame:
    return pd.read_csv(RESULTS / name)


def _signed(x: float, digits: int = 1, minus: str = "-") -> str:
    return f"{x:+.{digits}f}".replace("-", minus)


def _table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ MiniCity table
# (row of udalib.zoo.MINICITY_ROWS, its label in the table), in the table's order; the footnotes are the text's
MINICITY_TABLE_ROWS = (
    ("source_only", "source-only"),
    ("adabn", "AdaBN"),
    ("control_lambda0", "control: the same run with its target weight at 0 (λ_target, λ_adv)¹"),
    ("minent", "MinEnt"),
    ("maxsquare", "MaxSquare"),
    ("maxsquare_iw", "MaxSquare+IW"),
    ("maxsquare_iw_multi", "MaxSquare+IW+Multi"),
    ("adaptsegnet", "AdaptSegNet (single-level)"),
    ("adaptsegnet_multi", "AdaptSegNet multi-level"),
    ("clustered_embeddings", "Clustered embeddings (IW-MaxSquare + clustering, orthogonality, sparsity)"),
    ("cbst", "CBST (class-balanced self-training, 3 rounds, spatial prior)"),
    ("mlsl", "MLSL (+ spatially independent patches)"),
    ("snr", "SNR, trained on source only (no target image; 150 steps)"),
    ("adabn_snr", "SNR + AdaBN"),
    ("control_snr_maxsquare", "SNR-MS control: λ_target = 0, from the SNR model"),
    ("snr_maxsquare", "SNR-MS (MaxSquare on the SNR model)²"),
    ("tent", "TENT (test time: BatchNorm affine parameters on the target entropy, no source batch)³"),
    ("bn_alpha", "BN-α (test time: α = 0.5 source + target BatchNorm statistics)³"),
    ("dacs", "DACS (mean teacher, ClassMix, confidence weight)⁴"),
    ("dacs_rcs", "DACS + rare-class sampling⁴"),
    ("dacs_mic", "DACS + MIC⁴"),
    ("minent_mic", "MinEnt + MIC⁴"),
    ("adaptsegnet_multi_mic", "AdaptSegNet multi-level + MIC⁴"),
    ("oracle", "oracle (target labels)"),
)


def _short(row: str) -> str:
    """A row's name in a sentence: its table label up to the first parenthesis, without footnote marks."""
    label = dict(MINICITY_TABLE_ROWS)[row]
    return label.split(" (")[0].rstrip("¹²³⁴")


def minicity_table_summary() -> str:
    """The sentences under the standard table: which adaptation methods are ahead of max(AdaBN, control) on every
    seed, the range of their mean margins and the smallest single-seed margin, how far source-only is from the
    oracle and what AdaBN adds (``udalib.results.benchmark_summary`` and ``control_margins``; the mean teacher's rows
    in ``zoo.MEAN_TEACHER_SCORE``, over their own controls)."""
    from udalib import zoo
    from udalib.results import benchmark_summary, control_margins

    df = _read("minicity_table.csv")
    s = benchmark_summary([r for r, _ in MINICITY_TABLE_ROWS], RESULTS / "minicity_table.csv", digits=None)
    uda = [r for r, _ in MINICITY_TABLE_ROWS
           if pd.notna(s.loc[r, "vs max(AdaBN, control)"]) and r not in zoo.TEST_TIME_ROWS]
    every = [r for r in uda if s.loc[r, "seeds ahead"] == s.loc[r, "seeds"]]
    rest = [r for r in uda if r not in every]
    margin = s.loc[every, "vs max(AdaBN, control)"]
    low, high = margin.idxmin(), margin.idxmax()
    n = int(s.loc[uda, "seeds"].max())
    who = "Every adaptation method is" if not rest else f"{len(every)} of the {len(uda)} adaptation methods are"
    text = (f"{who} ahead of the better of AdaBN and its control on every one of the {n} seeds, on the mean by "
            f"{margin[low]:.1f} points ({_short(low)}) to {margin[high]:.1f} ({_short(high)})")
    if rest:
        text += "; ahead on fewer seeds: " + ", ".join(
            f"{_short(r)} ({int(s.loc[r, 'seeds ahead'])} of {int(s.loc[r, 'seeds'])}, "
            f"{_signed(s.loc[r, 'vs max(AdaBN, control)'], minus='−')} on the mean)" for r in rest)
    per_seed = pd.concat([control_margins(df), control_margins(df, controls=zoo.MEAN_TEACHER_CONTROLS,
                                                               value=zoo.MEAN_TEACHER_SCORE)])
    per_seed = per_seed[per_seed.method.isin(every)].sort_values("margin")
    first = per_seed.iloc[0]
    src, adabn, oracle = (s.loc[r, "as trained"] for r in ("source_only", "adabn", "oracle"))
    return (f"{text}. The smallest single-seed margin among them is {_short(first.method)}'s "
            f"{_signed(first.margin)} (seed {int(first.seed)}). Source-only reaches {100 * src / oracle:.0f} % of the "
            f"oracle and AdaBN adds {adabn - src:.1f} points.")


def minicity_table() -> str:
    """The standard MiniCity table (``benchmarks/minicity_table.py``): mean ± std over seeds as trained, and each
    method's margin over max(AdaBN, control) per seed, averaged (``udalib.results.benchmark_summary``)."""
    from udalib.results import benchmark_summary

    s = benchmark_summary([r for r, _ in MINICITY_TABLE_ROWS], RESULTS / "minicity_table.csv", digits=None)
    rows = []
    for row, label in MINICITY_TABLE_ROWS:
        r = s.loc[row]
        margin = r["vs max(AdaBN, control)"]
        has_margin = bool(pd.notna(margin))
        rows.append([label, f"{r['as trained']:.1f} ± {r['± std']:.1f}",
                     _signed(margin, minus="−") if has_margin else "",
                     f"{int(r['seeds ahead'])} of {int(r['seeds'])}" if has_margin else ""])
    return _table(["run", "target mIoU", "vs max(AdaBN, control)", "seeds ahead of both"], rows)


def claims_table() -> str:
    """Each paper's central claim on the MiniCity table (``udalib.results.claim_verdicts``)."""
    from udalib.results import claim_verdicts

    v = claim_verdicts(_read("minicity_table.csv"))
    rows = [[claim, r["paper"], f"`{r['winner']}` {r['winner mIoU']}", f"`{r['beaten']}` {r['beaten mIoU']}",
             f"{r['difference']:+.2f} ± {r['± std']:.2f}", r["seeds ahead"], r["verdict"]] for claim, r in v.iterrows()]
    return _table(["claim", "paper", "claimed winner", "beaten", "paired difference", "seeds ahead", "verdict"], rows)


def mean_teacher_claims() -> str:
    """The mean teacher's claims (``udalib.verdicts.MEAN_TEACHER_CLAIMS``) on ``minicity_mean_teacher.csv``, with
    the reason of each claim that does not hold; every claim not measured while the table is absent."""
    from udalib import verdicts

    return verdicts.markdown(verdicts.verdicts())


# ------------------------------------------------------------------------------------------------ atlas
def atlas_tables() -> str:
    """The atlas's margins and its source-only / AdaBN rows (``benchmarks/minicity_atlas.py --summarize``)."""
    import minicity_atlas

    text = minicity_atlas.summarize(RESULTS / "minicity_atlas.csv")
    return text.split("\n", 2)[2].strip()  # without the file's title line


MIC_HOSTS = {"minent_mic": "minent", "dacs_mic": "dacs"}


def mean_teacher_cost() -> str:
    """The newest measurement of ``benchmarks/mean_teacher_cost.py``: each method's median wall time, its ratio to
    MinEnt's, and what MIC adds to its host."""
    df = _read("mean_teacher_cost.csv")
    last = df[df.date == df.date.max()].set_index("method")
    med = last["median_seconds"]
    rows = [[f"`{m}`", f"{med[m]:.2f}", f"{med[m] / med['minent']:.2f} ×",
             f"{_signed(100 * (med[m] / med[MIC_HOSTS[m]] - 1), 0)} % over `{MIC_HOSTS[m]}`" if m in MIC_HOSTS
             else ""] for m in last.index]
    first = last.iloc[0]
    return (f"{first['date']} UTC, {first['device']}, {int(first['threads'])} threads, {int(first['steps'])} steps, "
            f"median of {int(first['repeats'])} (load average {first['load_average']}):\n\n"
            + _table(["method", "seconds", "÷ MinEnt", "MIC adds"], rows))


def mean_teacher_atlas() -> str:
    """The mean teacher's atlas margins (``benchmarks/mean_teacher_atlas.py --summarize``)."""
    import mean_teacher_atlas

    text = mean_teacher_atlas.summarize(RESULTS / "minicity_atlas_mean_teacher.csv")
    return text.split("\n", 2)[2].strip()


# ------------------------------------------------------------------------------------------------ CrossCity
CITY_PLAYS = {  # what each city's look stands for (udalib.data.minicity.CITY_ANALOGUES, in short)
    "rome": "warm light, ochre plaster, grey-paved sidewalks, crowds",
    "rio": "strong sun, painted facades, greenery",
    "tokyo": "dusk, glass and steel, dense traffic and crowds",
    "taipei": "haze, tiled facades, traffic, higher camera",
}


def _crosscity(name: str):
    from udalib import crosscity as cc

    scores = _read(name)
    return cc.city_table(scores), cc.gains(scores, "maxsquare")


def crosscity_readme() -> str:
    """README's CrossCity table: 20 steps per city, seeds 0-2 (``benchmarks/crosscity_table.py``)."""
    table, gains = _crosscity("crosscity_scores.csv")
    rows = []
    for city in CITY_PLAYS:
        t, g = table.loc[city], gains.loc[city]
        rows.append([city.capitalize(), CITY_PLAYS[city],
                     *(f"{t[c]:.1f}" for c in ("source-only", "AdaBN", "control", "maxsquare", "maxsquare_iw")),
                     f"{g['vs max(AdaBN, control)']:+.1f} (ahead of the control on {int(g['seeds ahead of control'])} "
                     f"of {int(g['seeds, control'])} seeds)"])
    return _table(["city", "plays", "source-only", "AdaBN", "control (λ=0)", "MaxSquare", "MaxSquare+IW",
                   "MaxSquare vs max(AdaBN, control)"], rows)


def crosscity_results() -> str:
    """RESULTS.md's CrossCity table at 20 steps, with the margins over the control and over both."""
    table, gains = _crosscity("crosscity_scores.csv")
    rows = []
    for city in CITY_PLAYS:
        t, g = table.loc[city], gains.loc[city]
        rows.append([city, *(f"{t[c]:.1f}" for c in ("source-only", "AdaBN", "control", "maxsquare", "maxsquare_iw")),
                     f"{g['vs control']:+.2f} ({int(g['seeds ahead of control'])}/{int(g['seeds, control'])})",
                     f"{g['vs max(AdaBN, control)']:+.2f}"])
    return _table(["city", "source-only", "AdaBN", "control", "MaxSquare", "MaxSquare+IW",
                   "MaxSquare − control (seeds ahead)", "MaxSquare − max(AdaBN, control)"], rows)


def crosscity_60steps() -> str:
    """The same study at 60 steps, MaxSquare only (``crosscity_table.py --steps 60 --methods maxsquare``)."""
    table, gains = _crosscity("crosscity_scores_60steps.csv")
    rows = []
    for city in CITY_PLAYS:
        t, g = table.loc[city], gains.loc[city]
        rows.append([city, *(f"{t[c]:.1f}" for c in ("AdaBN", "control", "maxsquare")),
                     f"{g['vs max(AdaBN, control)']:+.2f} "
                     f"({int(g['seeds ahead of both'])}/{int(g['seeds, control'])})"])
    return _table(["city", "AdaBN", "control", "MaxSquare",
                   "MaxSquare − max(AdaBN, control), per seed (seeds ahead)"], rows)


# ------------------------------------------------------------------------------------------------ test-time rows
TTA_LABELS = {"source_only": "source-only", "adabn": "AdaBN", "bn_alpha": "BN-α (α = 0.5, preset)",
              "bn_alpha_1": "BN-α (α = 1)", "tent": "TENT", "maxsquare": "MaxSquare"}


def tta_table() -> str:
    """TENT and BN-α beside AdaBN on the composite and on ``prior`` (``benchmarks/tta_table.py``'s summary)."""
    import tta_table as tta

    s = tta.summary(_read("tta_table.csv"))
    rows = []
    for row, label in TTA_LABELS.items():
        cells = [label]
        for domain in ("composite", "prior"):
            r = s.loc[(domain, row)]
            diff = "" if row == "adabn" else f"{r['vs adabn']:+.1f} ({int(r['seeds ahead'])}/{int(r['seeds'])})"
            cells += [f"{r['mean']:.1f} ± {r['std']:.1f}", diff]
        rows.append(cells)
    return _table(["row", "composite", "− AdaBN (seeds ahead)", "`prior`", "− AdaBN (seeds ahead)"], rows)


# ------------------------------------------------------------------------------------------------ selection
def selection_study() -> str:
    """Regret and Spearman ρ of each label-free validator (``benchmarks/selection_study.py``'s summary), and the
    best checkpoint per method."""
    import selection_study as study

    df = study.read_rows(RESULTS / "selection.csv")
    s = study.summarize(df).set_index(["validator", "method"])
    methods = [m for m in study.WEIGHT if m in s.index.get_level_values(1)]
    rows = [[v, *(f"{s.loc[(v, m), 'regret']:.1f} ± {s.loc[(v, m), 'regret_std']:.1f} "
                  f"(ρ {s.loc[(v, m), 'spearman']:+.2f})" for m in methods)]
            for v in study.VALIDATORS if v in s.index.get_level_values(0)]
    best = study.best_checkpoints(df)
    return (_table(["validator", *methods], rows) + "\n\nBest checkpoint per method (target labels), mean over seeds: "
            + ", ".join(f"{m} {best[m]:.1f}" for m in methods) + ".")


def minicity_selection() -> str:
    """Last, IM-selected and target-selected checkpoints (``benchmarks/minicity_table.py --select-every 10``)."""
    import minicity_table

    df = _read("minicity_selection.csv")
    every = int(df.select_every.iloc[0])
    text = minicity_table.selection_markdown(minicity_table.selection_summary(df), every)
    return text[text.index("| row |"):].strip()  # the table, without its caption


# ------------------------------------------------------------------------------------------------ version 1
def design_study() -> str:
    """The design study's table (``benchmarks/minicity_design_study.py``'s summary), without the per-seed lines."""
    import minicity_design_study

    text = minicity_design_study.summarize(_read("minicity_design_study.csv"))
    table = text[text.index("| design |"):]
    return table[:table.index("\n\n")].strip()


# (label, CSV and candidate, seeds) of each line: version 1's five-seed standard table, then the candidates
CANDIDATE_LINES = (
    ("photometry composite (`photometry+palette+texture`)", "minicity_table_v1.csv", None, (0, 1, 2, 3, 4)),
    ("`palette+texture`", "minicity_candidates.csv", "palette+texture", (0, 1, 2)),
    ("`palette+texture`", "minicity_candidates.csv", "palette+texture", (3, 4)),
    ("`exposure_mild+palette+texture`", "minicity_candidates.csv", "exposure_mild+palette+texture", (0, 1, 2)),
    ("`exposure_mild+palette+texture`", "minicity_candidates.csv", "exposure_mild+palette+texture", (3, 4)),
    ("`exposure+palette+texture`", "minicity_candidates.csv", "exposure+palette+texture", (0, 1, 2)),
)


def candidates_table() -> str:
    """Each candidate composite on the seeds that chose it and on the others (``minicity_candidates.overview``)."""
    import minicity_candidates as mc

    rows = []
    for label, csv, candidate, seeds in CANDIDATE_LINES:
        df = _read(csv)
        if candidate is not None:
            df = df[df.candidate == candidate]
        o = mc.overview(df, seeds)
        span = f"{seeds[0]}-{seeds[-1]}"
        rows.append([label, span, *(f"{o[r]:.1f}" for r in ("source_only", "adabn", "oracle")),
                     *(f"{o[m]:+.1f}" for m in mc.OVERVIEW_METHODS)])
    return _table(["candidate", "seeds", "source-only", "AdaBN", "oracle", "MinEnt", "MaxSquare", "+IW+Multi",
                   "AdaptSegNet multi", "clustered", "CBST", "SNR-MS"], rows)


# ------------------------------------------------------------------------------------------------ throughput
def _throughput(name: str, columns: dict) -> str:
    import train_throughput

    rows = _read(name).to_dict("records")
    return train_throughput.markdown(rows, "plain", tuple(columns), columns)


def train_throughput_cpu() -> str:
    """``benchmarks/train_throughput.py`` on the CPU (its ``markdown``, with the columns named for a reader)."""
    return _throughput("train_throughput_cpu.csv", {"images_per_second": ("images/s", ".3f"),
                                                    "seconds_per_step": ("s/step", ".2f"),
                                                    "peak_memory_mb": ("peak RSS (MB)", ",.0f")})


def eval_throughput_cpu() -> str:
    """``benchmarks/eval_throughput.py`` on the CPU."""
    return _throughput("eval_throughput_cpu.csv", {"images_per_second": ("images/s", ".3f"),
                                                   "seconds_per_image": ("s/image", ".2f"), "batch": ("batch", "d"),
                                                   "peak_memory_mb": ("peak RSS (MB)", ",.0f")})


TABLES: dict[str, Callable[[], str]] = {
    "minicity_table": minicity_table,
    "minicity_table_summary": minicity_table_summary,
    "mean_teacher_atlas": mean_teacher_atlas,
    "mean_teacher_cost": mean_teacher_cost,
    "claims_table": claims_table,
    "mean_teacher_claims": mean_teacher_claims,
    "atlas_tables": atlas_tables,
    "crosscity_readme": crosscity_readme,
    "crosscity_results": crosscity_results,
    "crosscity_60steps": crosscity_60steps,
    "tta_table": tta_table,
    "selection_study": selection_study,
    "minicity_selection": minicity_selection,
    "design_study": design_study,
    "candidates_table": candidates_table,
    "train_throughput_cpu": train_throughput_cpu,
    "eval_throughput_cpu": eval_throughput_cpu,
}


def render(text: str, tables: Mapping[str, str]) -> str:
    """``text`` with the body of every ``<!-- results: NAME -->`` block replaced by ``tables[NAME]`` (a blank line
    on either side, so that the table is a Markdown block of its own). An unknown name raises ``KeyError``."""
    def body(m: re.Match) -> str:
        name = m["name"]
        if name not in tables:
            raise KeyError(f"<!-- results: {name} --> names no table; known: {', '.join(TABLES)}")
        return f"{m.group(1)}\n{tables[name].strip()}\n\n{m.group(4)}"

    return BLOCK.sub(body, text)


def block_names(text: str) -> list[str]:
    return [m["name"] for m in BLOCK.finditer(text)]


def written(files=FILES) -> dict[Path, tuple[str, str]]:
    """Each file -> (its text now, its text as this script writes it); every table computed once."""
    texts = {path: path.read_text() for path in files}
    names = {n for text in texts.values() for n in block_names(text)}
    tables = {n: TABLES[n]() for n in names if n in TABLES}
    return {path: (text, render(text, tables)) for path, text in texts.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file differs from its tables")
    args = p.parse_args(argv)
    stale = []
    for path, (old, new) in written().items():
        name = path.relative_to(HERE.parent)
        if old == new:
            continue
        stale.append(name)
        if args.check:
            sys.stdout.writelines(difflib.unified_diff(old.splitlines(True), new.splitlines(True), f"{name} (now)",
                                                       f"{name} (from the CSVs)"))
        else:
            path.write_text(new)
            print(f"rewrote the tables of {name}")
    if args.check and stale:
        print(f"\nout of date: {', '.join(map(str, stale))}; run `make results` (python benchmarks/write_results.py)")
        return 1
    if not stale:
        print("every table is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
