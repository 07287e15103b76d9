"""The HiVA paper's Tables I-VI as data, and an audit of their internal consistency.

Tables I-III compare HiVA with the state of the art on BP4D, DISFA and GFT; Tables
IV-VI are the ablations on the same data sets. Values are F1 in % (F1 x 100, Sec. IV-A),
per AU and their average (AVE), transcribed from the paper text into
``data/paper/table<n>_<dataset>_<kind>.csv``.

The audit (:func:`audit_tables`) checks what can be checked from the tables alone:
printed AVE vs the mean of the printed per-AU values, values of the same method that
differ between a comparison table and its ablation table, repeated rows, and whether
HiVA (Ours) has the highest AVE of its tables, as the text claims (ambiguity 6 of the
design notes).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hiva_lib.data.au import au_keys, dataset_aus, real_counterpart
from hiva_lib.variants import TABLE_ROWS, VARIANTS

PAPER_DIR = Path(__file__).parents[1] / "assets" / "paper"
OURS = "HiVA (Ours)"


@dataclass(frozen=True)
class PaperTable:
    number: int
    dataset: str  # bp4d, disfa or gft
    kind: str  # "sota" (Tables I-III) or "ablation" (Tables IV-VI)
    file: str

    @property
    def roman(self) -> str:
        return ROMAN[self.number]

    @property
    def title(self) -> str:
        what = "comparison with the state of the art" if self.kind == "sota" else "ablation"
        return f"Table {self.roman}: {self.dataset.upper()}, {what}"


ROMAN = {1: "I", 2: "II", 3: "III", 4: "IV", 5: "V", 6: "VI"}
TABLES: dict[int, PaperTable] = {
    1: PaperTable(1, "bp4d", "sota", "table1_bp4d_sota.csv"),
    2: PaperTable(2, "disfa", "sota", "table2_disfa_sota.csv"),
    3: PaperTable(3, "gft", "sota", "table3_gft_sota.csv"),
    4: PaperTable(4, "bp4d", "ablation", "table4_bp4d_ablation.csv"),
    5: PaperTable(5, "disfa", "ablation", "table5_disfa_ablation.csv"),
    6: PaperTable(6, "gft", "ablation", "table6_gft_ablation.csv"),
}
# data set -> (comparison table, ablation table); SynthFACS presets use their real model's
DATASET_TABLES: dict[str, tuple[int, int]] = {"bp4d": (1, 4), "disfa": (2, 5), "gft": (3, 6)}


class PaperTableError(ValueError):
    """A paper table file is missing or malformed, or a table/row does not exist."""


def table_for(dataset: str) -> tuple[int, int]:
    """(comparison table, ablation table) numbers of a data set; synth-* map to their model."""
    real = real_counterpart(dataset)
    if real not in DATASET_TABLES:
        names = sorted([*DATASET_TABLES, *(f"synth-{d}" for d in DATASET_TABLES)])
        raise PaperTableError(f"no paper tables for data set {dataset!r}; "
                              f"choose one of {names}")
    return DATASET_TABLES[real]


def load_table(n: int, paper_dir: str | Path | None = None) -> pd.DataFrame:
    """Table ``n`` (1-6): index ``method``, columns AU keys in the data set's order + ``AVE``."""
    if n not in TABLES:
        raise PaperTableError(f"no Table {n}; the paper has Tables {sorted(TABLES)}")
    info = TABLES[n]
    path = Path(paper_dir or PAPER_DIR) / info.file
    if not path.exists():
        raise PaperTableError(f"{path}: missing. Restore hiva_lib/assets/paper/ from the "
                              "repository (or pass paper_dir= pointing at the CSVs).")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise PaperTableError(f"{path}: unreadable CSV ({err}). Restore it.") from None
    expected = ["method", *au_keys(dataset_aus(info.dataset)), "AVE"]
    if list(df.columns) != expected:
        raise PaperTableError(f"{path}: columns {list(df.columns)}, expected {expected}. "
                              "Fix the header.")
    values = df[expected[1:]].apply(pd.to_numeric, errors="coerce")
    if values.isna().any().any():
        bad = values.isna().stack()
        row, col = bad[bad].index[0]
        raise PaperTableError(f"{path}: non-numeric or empty value in row "
                              f"{df['method'].iat[row]!r}, column {col}. Fix the value.")
    values.index = pd.Index(df["method"].astype(str).str.strip(), name="method")
    values.columns.name = f"Table {info.roman}"
    return values


def load_tables(paper_dir: str | Path | None = None) -> dict[int, pd.DataFrame]:
    """All six tables, keyed by number."""
    return {n: load_table(n, paper_dir) for n in TABLES}


def variant_row_names() -> dict[str, str]:
    """Variant slug -> ablation row name (Tables V-VI spelling), from hiva_lib.variants."""
    return {slug: v.row_name for slug, v in TABLE_ROWS.items()}


def row_name(slug: str, table: int) -> str:
    """The row of ``table`` that a variant reproduces (``baseline`` is "VLU" in Table IV)."""
    if slug not in VARIANTS:
        raise PaperTableError(f"unknown variant {slug!r}; choose one of {list(VARIANTS)}")
    return VARIANTS[slug].row_in_table(table)


def paper_row(dataset: str, slug: str, kind: str = "ablation") -> pd.Series:
    """The paper's numbers (F1 %) for a variant on a data set: ablation table, or the
    comparison table (``kind="sota"``, only the full model appears there)."""
    sota, ablation = table_for(dataset)
    n = ablation if kind == "ablation" else sota
    table = load_table(n)
    name = row_name(slug, n)
    if name not in table.index:
        raise PaperTableError(f"Table {ROMAN[n]} has no row {name!r} (variant {slug!r})")
    return table.loc[[name]].iloc[0]  # first occurrence should a name repeat


# ----------------------------------------------------------------------------- audit
def _decimals(x: float) -> int:
    """Digits after the point of a printed value (from its shortest float repr)."""
    text = repr(float(x))
    if "e" in text:
        return 6
    frac = text.split(".")[1]
    return 0 if frac == "0" else len(frac)


def _row_tolerance(row: pd.Series, au_cols: list[str]) -> float:
    # |mean(rounded AUs) - rounded AVE| <= half unit of the AU precision (the mean of values
    # each off by at most that) + half unit of the AVE precision. Precision is inferred per
    # row: a row printed with one decimal has some value with a non-zero tenth.
    au_dec = max(_decimals(v) for v in row[au_cols])
    ave_dec = max(_decimals(row["AVE"]), 1 if au_dec else 0)
    return 0.5 * 10.0 ** -au_dec + 0.5 * 10.0 ** -ave_dec


AUDIT_COLUMNS = ["check", "table", "method", "column", "value", "reference", "difference",
                 "tolerance", "finding"]


def audit_tables(tables: dict[int, pd.DataFrame] | None = None) -> pd.DataFrame:
    """Inconsistencies in the paper's tables, one row per finding (empty if none).

    Checks: ``ave_mismatch`` (printed AVE vs mean of the printed per-AU values, beyond the
    rounding tolerance), ``cross_table`` (a method's value in Tables I-III vs IV-VI),
    ``duplicate_row`` (a method listed twice) and ``not_best`` (HiVA (Ours) without the
    highest AVE of a table, against the claim that it surpasses the state of the art).
    """
    tables = load_tables() if tables is None else tables
    found: list[dict] = []

    def add(check: str, n: int, method: str, column: str, value: float, reference: float,
            tolerance: float, finding: str) -> None:
        found.append(dict(check=check, table=ROMAN.get(n, str(n)), method=method, column=column,
                          value=value, reference=reference,
                          difference=round(value - reference, 4), tolerance=tolerance,
                          finding=finding))

    for n, table in sorted(tables.items()):
        au_cols = [c for c in table.columns if c != "AVE"]
        for method, row in table.iterrows():
            mean = float(row[au_cols].mean())
            tol = _row_tolerance(row, au_cols)
            if abs(row["AVE"] - mean) > tol + 1e-9:
                add("ave_mismatch", n, method, "AVE", float(row["AVE"]), round(mean, 4), tol,
                    f"printed AVE {row['AVE']:.1f} but the mean of its {len(au_cols)} AU values "
                    f"is {mean:.2f}")
        for method in table.index[table.index.duplicated()].unique():
            rows = table.loc[[method]]
            same = bool((rows.nunique() == 1).all())
            add("duplicate_row", n, method, "", float(rows["AVE"].iat[0]),
                float(rows["AVE"].iat[-1]), 0.0,
                f"listed {len(rows)} times" + (" with identical values" if same
                                               else " with different values"))

    for sota, ablation in sorted(set(DATASET_TABLES.values())):
        if sota not in tables or ablation not in tables:
            continue
        a, b = tables[sota], tables[ablation]
        for method in sorted(set(a.index) & set(b.index)):
            ra, rb = a.loc[[method]].iloc[0], b.loc[[method]].iloc[0]
            for col in a.columns:
                if col in b.columns and not np.isclose(ra[col], rb[col]):
                    add("cross_table", sota, method, col, float(ra[col]), float(rb[col]), 0.0,
                        f"Table {ROMAN[sota]} prints {ra[col]:g}, Table {ROMAN[ablation]} "
                        f"prints {rb[col]:g}")

    for n, table in sorted(tables.items()):
        if OURS not in table.index:
            continue
        ours = float(table.loc[[OURS], "AVE"].max())
        better = table[table["AVE"] > ours]
        if len(better):
            top = better["AVE"].idxmax()
            names = ", ".join(f"{m} {v:g}" for m, v in better["AVE"].items())
            add("not_best", n, OURS, "AVE", ours, float(better["AVE"].max()), 0.0,
                f"HiVA (Ours) AVE {ours:.1f} is not the highest of Table {ROMAN.get(n, n)}: "
                f"{names}" + (f" (best: {top})" if len(better) > 1 else ""))
    return pd.DataFrame(found, columns=AUDIT_COLUMNS)


def audit_markdown(audit: pd.DataFrame) -> str:
    """The audit as a Markdown section (a sentence when there is nothing to report)."""
    lines = ["## Audit of the paper's Tables I-VI", ""]
    if audit.empty:
        return "\n".join(lines + ["No inconsistencies found.", ""])
    explain = {
        "ave_mismatch": "Printed AVE differs from the mean of the printed per-AU F1 by more "
                        "than rounding allows (tolerance: half a unit of the per-AU precision "
                        "plus half a unit of the AVE precision).",
        "cross_table": "The same method has different numbers in the comparison table "
                       "(I-III) and the ablation table (IV-VI) of a data set.",
        "duplicate_row": "A method is listed more than once in a table.",
        "not_best": "HiVA (Ours) does not have the highest AVE of the table, although the "
                    "text says it surpasses the state of the art.",
    }
    for check, group in audit.groupby("check", sort=False):
        lines += [f"### {check}", "", explain.get(check, ""), ""]
        show = group[["table", "method", "column", "value", "reference", "difference",
                      "finding"]]
        lines += [markdown_table(show), ""]
    return "\n".join(lines)


def fmt_number(v: float, digits: int = 2) -> str:
    """At most ``digits`` decimals, at least one: 60.0, 55.58, -0.8; NaN as an empty cell."""
    if np.isnan(v):
        return ""
    text = f"{v:.{digits}f}"
    while text.endswith("0") and not text.endswith(".0"):
        text = text[:-1]
    return text


def markdown_table(df: pd.DataFrame) -> str:
    # pandas' to_markdown needs tabulate; a plain writer keeps the dependency list short
    cols = [str(c) for c in df.columns]
    rows = [[fmt_number(v) if isinstance(v, float) else str(v) for v in r]
            for r in df.itertuples(index=False)]
    out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)
