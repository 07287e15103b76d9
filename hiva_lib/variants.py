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

``baseline_s2`` is the matched-training control: the Baseline's model (a)+(c) trained
through stage 2 exactly as HiVA's stage 2 trains it, without the language branch, so that
HiVA minus ``baseline_s2`` is the language branch alone and HiVA minus Baseline is language
plus two more epochs of training (its ``description`` says what "the same training" means).

The causal tests of the AU embeddings' collapse (docs/model.md), each HiVA with one change:
L_diff's site x weight as a 2 x 2 (:func:`ldiff_site_weight_cells`: on H or Z, lambda 0.01 or
1); ``stop_grad_cdca_z`` / ``stop_grad_ddca_z`` (Z enters CDCA / DDCA detached: their gradient
does not reach Z); ``text_frozen_s2`` (the text branch is not trained in stage 2).

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
    description: str = ""  # what the variant is, where its row name cannot say it all

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
    Variant("baseline_s2", "Control: Baseline + HiVA's stage 2, no language (matched training)",
            dict(use_text=False, vision_stage2=True), control=True, description=(
                "The vision-only model (a)+(c), started from the same stage-1 checkpoint as "
                "HiVA and trained through stage 2 with HiVA's stage-2 schedule: the same epochs "
                "(epochs_stage2), optimizer (AdamW, weight decay, cosine schedule), learning "
                "rates (lr_stage2; a fresh module at lr_stage2 x stage2_new_module_lr_mult), "
                "augmentation, batches and seed handling (one code path: engine.loop). Its "
                "trainable parameters are the vision parameters that HiVA's stage 2 trains: the "
                "backbone's trainable part (all of it, or backbone_trainable), the AU branches "
                "(when stage2_train_branches) and the graph (only when graph_in_stage2, which "
                "then also refines U_i); plus, as HiVA's stage 2 predicts through a fresh head, "
                "a fresh head of the same form on U_i alone (FC + ReLU to head_dim, then a "
                "per-AU FC). Not trained, as in HiVA's stage 2: the stage-1 per-AU FC (and, by "
                "default, the graph). Absent: the text branch, DDCA, CDCA and L_diff.")),
    Variant("ldiff_z_lambda_0.01", "Causal: L_diff on Z, lambda = 0.01",
            dict(au_distinction="ldiff_z", lambda_diff=0.01), control=True,
            description="L_diff's site x weight, the cell (Z, 0.01): full_ldiff_z's site at "
                        "the synth-cpu preset's weight"),
    Variant("stop_grad_cdca_z", "Causal: no gradient from CDCA into Z",
            dict(cdca_stop_grad_z=True), control=True,
            description="HiVA with Z detached where it enters CDCA: CDCA still reads Z, but "
                        "its gradient reaches neither Z nor the text branch through Z"),
    Variant("stop_grad_ddca_z", "Causal: no gradient from DDCA into Z",
            dict(ddca_stop_grad_z=True), control=True,
            description="HiVA with Z detached where it enters DDCA (the word tokens W_p h_t of "
                        "Eq. 5's vision->text attention are not: W_p still learns from DDCA)"),
    Variant("text_frozen_s2", "Causal: text branch frozen in stage 2",
            dict(text_frozen_stage2=True), control=True,
            description="HiVA whose text branch (trainable BERT layers, W_p, the Transformer "
                        "of Eq. 2; the learned tokens for no_language) is not trained in stage "
                        "2: Z keeps its value at the start of stage 2 (its fresh W_p and "
                        "Transformer stay at their seeded initialisation); dropout and the "
                        "description draws act as in HiVA"),
)
CONTROLS: dict[str, Variant] = {v.slug: v for v in _CONTROLS}
VARIANTS: dict[str, Variant] = {**TABLE_ROWS, **CONTROLS}

# the causal tests of the collapse (docs/model.md), apart from L_diff's 2 x 2
CAUSAL = ("stop_grad_cdca_z", "stop_grad_ddca_z", "text_frozen_s2")
LDIFF_SITES = {"H": "ldiff_h", "Z": "ldiff_z"}
LDIFF_WEIGHTS = (0.01, 1.0)


def ldiff_site_weight_cells(train_lambda: float) -> dict[tuple[str, float], str]:
    """L_diff's site x weight 2 x 2: {(site "H" | "Z", lambda): variant slug}. The cell of
    HiVA itself (H at the training preset's ``train_lambda``) is ``full``, whose runs exist;
    the other H cell is a lambda-sweep variant, the Z cells ``full_ldiff_z`` (lambda 1) and
    ``ldiff_z_lambda_0.01``."""
    cells = {("H", w): "full" if w == train_lambda else lambda_slug(w) for w in LDIFF_WEIGHTS}
    cells[("Z", 0.01)] = "ldiff_z_lambda_0.01"
    cells[("Z", 1.0)] = "full_ldiff_z"
    return cells


def causal_tests(train_lambda: float) -> tuple[str, ...]:
    """The variants of the causal tests of the collapse (docs/model.md): L_diff's site x
    weight cells (``full``, HiVA's own cell, first among them), then :data:`CAUSAL`."""
    return tuple(dict.fromkeys([*ldiff_site_weight_cells(train_lambda).values(), *CAUSAL]))

# The fields a variant sets: applied on top of any preset, so a preset's own values (e.g. a
# user override use_aug=False) cannot leak into "full".
_FLAGS = ("use_text", "use_aug", "use_ldiff", "use_ddca", "use_cdca")
_RESET = dict(text_control="none", lambda_diff=None, au_distinction="ldiff_h",
              vision_stage2=False, cdca_stop_grad_z=False, ddca_stop_grad_z=False,
              text_frozen_stage2=False)


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
