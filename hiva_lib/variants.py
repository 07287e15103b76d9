"""The ablation variants of Tables IV-VI and the controls: one place mapping a slug to a preset.

Each variant is (table row name, ModelConfig overrides, training stages). The vision-only
Baseline (Table IV calls the row "VLU") is the stage-1 model (a)+(c) itself and runs stage 1
only; every other row is a stage-2 model started from that shared stage-1 checkpoint.
"HiVA (w/o CDCA, w/o DDCA)" keeps the text branch and fuses Z_i without cross-attention
(``fusion_without_attention``, ambiguity 3), which is what makes it differ from Baseline.

The controls (no row of the paper; the report shows them in their own table):
``shuffled_text`` gives every AU another AU's descriptions (a fixed derangement, no AU keeps
its own); ``no_language`` puts learned per-AU token embeddings of the same shapes in place of
the text encoder's output (no language model at all); ``lambda_<v>`` is HiVA with L_diff's
weight lambda of Eq. 7 set to v, the sensitivity sweep (the training preset's lambda otherwise).
``full_au_id`` (HiVA with an AU-identity embedding before Eq. 2's Transformer) and
``full_ldiff_z`` (HiVA with L_diff on Z, lambda = 1) are the alternatives of ambiguity 7
(docs/model.md); they are listed with the controls so that they stay out of Tables IV-VI.

``TABLE_ROWS`` holds the eight rows, ``CONTROLS`` the controls, ``VARIANTS`` both (every slug
the training engine and notebook 04 accept).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from hiva_lib.model.config import ModelConfig


@dataclass(frozen=True)
class Variant:
    slug: str
    row_name: str
    overrides: dict = field(default_factory=dict)
    stages: tuple[int, ...] = (1, 2)
    # the row's name in a table that prints it differently (Table IV: "VLU" for Baseline)
    table_names: dict[int, str] = field(default_factory=dict)
    control: bool = False  # a control, not a row of Tables IV-VI

    @property
    def aliases(self) -> tuple[str, ...]:
        """Other row names of the same variant in the paper."""
        return tuple(sorted(set(self.table_names.values())))

    def row_in_table(self, table: int) -> str:
        """The name of this variant's row in paper table ``table`` (4, 5 or 6)."""
        return self.table_names.get(table, self.row_name)


_ROWS = (
    Variant("full", "HiVA (Ours)"),
    Variant("wo_aug", "HiVA (w/o AUG)", dict(use_aug=False)),
    Variant("wo_ldiff", "HiVA (w/o L_diff)", dict(use_ldiff=False)),
    Variant("wo_aug_wo_ldiff", "HiVA (w/o AUG, w/o L_diff)", dict(use_aug=False, use_ldiff=False)),
    Variant("baseline", "Baseline", dict(use_text=False), stages=(1,),
            table_names={4: "VLU"}),
    Variant("wo_ddca", "HiVA (w/o DDCA)", dict(use_ddca=False)),
    Variant("wo_cdca", "HiVA (w/o CDCA)", dict(use_cdca=False)),
    Variant("wo_cdca_wo_ddca", "HiVA (w/o CDCA, w/o DDCA)", dict(use_ddca=False, use_cdca=False)),
)
TABLE_ROWS: dict[str, Variant] = {v.slug: v for v in _ROWS}

# the lambda sweep: 0, the paper's 1e-5, and up to where lambda*L_diff dominates L_au
# (the measured gradient-norm ratio: hiva_lib.study.ldiff_balance)
LAMBDA_SWEEP = (0.0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


def lambda_slug(value: float) -> str:
    """``lambda_0``, ``lambda_1e-05``, ``lambda_100``: the sweep variant of lambda ``value``."""
    return "lambda_" + ("0" if value == 0 else f"{value:g}")


_CONTROLS = (
    Variant("shuffled_text", "Control: shuffled descriptions", dict(text_control="shuffled"),
            control=True),
    Variant("no_language", "Control: learned AU tokens, no language model",
            dict(text_control="learned"), control=True),
    *(Variant(lambda_slug(v), f"Sweep: lambda = {v:g}", dict(lambda_diff=v), control=True)
      for v in LAMBDA_SWEEP),
    # ambiguity 7 (docs/model.md), not rows of the paper, so shown with the controls: HiVA with a
    # learned AU-identity embedding before Eq. 2's Transformer; HiVA with L_diff on Z at a
    # lambda that keeps Z apart (1: measured on synth-bp4d, docs/model.md)
    Variant("full_au_id", "HiVA + AU identity (ambiguity 7)",
            dict(au_distinction="identity"), control=True),
    Variant("full_ldiff_z", "HiVA + L_diff on Z, lambda = 1 (ambiguity 7)",
            dict(au_distinction="ldiff_z", lambda_diff=1.0), control=True),
)
CONTROLS: dict[str, Variant] = {v.slug: v for v in _CONTROLS}
VARIANTS: dict[str, Variant] = {**TABLE_ROWS, **CONTROLS}

# The fields a variant sets: applied on top of any preset, so a preset's own values (e.g. a
# user override use_aug=False) cannot leak into "full".
_FLAGS = ("use_text", "use_aug", "use_ldiff", "use_ddca", "use_cdca")
_RESET = dict(text_control="none", lambda_diff=None, au_distinction="ldiff_h")


def apply_variant(cfg: ModelConfig, slug: str) -> ModelConfig:
    """``cfg`` with the ablation flags and control fields of variant ``slug`` (all other
    fields unchanged)."""
    if slug not in VARIANTS:
        raise ValueError(f"unknown variant {slug!r}; choose one of {list(VARIANTS)}")
    values = {k: True for k in _FLAGS} | _RESET
    values.update(VARIANTS[slug].overrides)
    return dataclasses.replace(cfg, **values)


def _norm(name: str) -> str:
    return " ".join(name.replace("_{diff}", "_diff").replace("\\", "").split()).lower()


def variant_from_row_name(name: str) -> Variant:
    """The variant of a table row name ("HiVA (w/o DDCA)", "VLU", "HiVA (w/o L_{diff})" ...)."""
    wanted = _norm(name)
    for v in (*_ROWS, *_CONTROLS):
        if wanted in {_norm(n) for n in (v.row_name, *v.aliases)}:
            return v
    raise ValueError(f"no variant has the table row {name!r}; rows: "
                     f"{[v.row_name for v in _ROWS]} (and 'VLU' for Baseline)")
