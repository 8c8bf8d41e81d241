"""The Hymba model: hybrid block, language model, SSM heads, per-layer plan, decoding cache."""

from hymba.model.cache import HybridCache, LayerKV
from hymba.model.graphs import GraphedDecoder
from hymba.model.hymba import HymbaBlock, HymbaLM, ModelOutput
from hymba.model.plan import LayerPlan, layer_plans
from hymba.model.ssm import SSM_KINDS, Mamba1, SSMHead, SSMState

__all__ = [
    "HymbaLM",
    "HymbaBlock",
    "ModelOutput",
    "HybridCache",
    "LayerKV",
    "GraphedDecoder",
    "LayerPlan",
    "layer_plans",
    "SSMHead",
    "SSMState",
    "Mamba1",
    "SSM_KINDS",
]
