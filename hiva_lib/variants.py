"""The ablation variants of Tables IV-VI: one place mapping a slug to its table row.

Each variant is (table row name, ModelConfig overrides, training stages). The vision-only
Baseline (Table IV calls the row "VLU") is the stage-1 model (a)+(c) itself and runs stage 1
only; every other row is a stage-2 model started from that shared stage-1 checkpoint.
"HiVA (w/o CDCA, w/o DDCA)" keeps the text branch and fuses Z_i without cross-attention
(``fusion_without_attention``, ambiguity 3), which is what makes it differ from Baseline.
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
VARIANTS: dict[str, Variant] = {v.slug: v for v in _ROWS}

# The flags a variant sets: applied on top of any preset, so a preset's own flag values
# (e.g. a user override use_aug=False) cannot leak into "full".
_FLAGS = ("use_text", "use_aug", "use_ldiff", "use_ddca", "use_cdca")


def apply_variant(cfg: ModelConfig, slug: str) -> ModelConfig:
    """``cfg`` with the ablation flags of variant ``slug`` (all other fields unchanged)."""
    if slug not in VARIANTS:
        raise ValueError(f"unknown variant {slug!r}; choose one of {list(VARIANTS)}")
    flags = {k: True for k in _FLAGS}
    flags.update(VARIANTS[slug].overrides)
    return dataclasses.replace(cfg, **flags)


def _norm(name: str) -> str:
    return " ".join(name.replace("_{diff}", "_diff").replace("\\", "").split()).lower()


def variant_from_row_name(name: str) -> Variant:
    """The variant of a table row name ("HiVA (w/o DDCA)", "VLU", "HiVA (w/o L_{diff})" ...)."""
    wanted = _norm(name)
    for v in _ROWS:
        if wanted in {_norm(n) for n in (v.row_name, *v.aliases)}:
            return v
    raise ValueError(f"no variant has the table row {name!r}; rows: "
                     f"{[v.row_name for v in _ROWS]} (and 'VLU' for Baseline)")
