"""Typed, validated configuration: the model (:mod:`.model`), one training run (:mod:`.run`), the roadmap's
scales (:mod:`.scales`) and the one loader and set of checks every TOML section uses (:mod:`.section`).

Validation happens at construction; every error names the key as ``--set`` spells it (``model.init_std=...``),
the value and what would be valid.
"""

from hymba.config.model import FUSIONS, SWA_PLANS, ModelConfig, backends
from hymba.config.run import (
    COMPILE_MIN_STEPS,
    DEVICES,
    PARALLEL,
    PRECISIONS,
    DataConfig,
    RunConfig,
    TrainConfig,
    tiny_model,
)
from hymba.config.scales import SCALES, roadmap, scale_names, scale_settings
from hymba.config.section import (
    Section,
    apply_overrides,
    dump_sections,
    load_sections,
    load_tables,
    parse_override,
    read_toml,
    section_from_dict,
)

__all__ = [
    "COMPILE_MIN_STEPS",
    "DEVICES",
    "FUSIONS",
    "PARALLEL",
    "PRECISIONS",
    "SCALES",
    "SWA_PLANS",
    "DataConfig",
    "ModelConfig",
    "RunConfig",
    "Section",
    "TrainConfig",
    "apply_overrides",
    "backends",
    "dump_sections",
    "load_sections",
    "load_tables",
    "parse_override",
    "read_toml",
    "roadmap",
    "scale_names",
    "scale_settings",
    "section_from_dict",
    "tiny_model",
]
