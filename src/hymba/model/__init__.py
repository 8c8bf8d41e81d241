"""The Hymba model: hybrid block, language model, decoding cache."""

from hymba.model.cache import HybridCache, LayerKV
from hymba.model.graphs import GraphedDecoder
from hymba.model.hymba import HymbaBlock, HymbaLM, ModelOutput

__all__ = ["HymbaLM", "HymbaBlock", "ModelOutput", "HybridCache", "LayerKV", "GraphedDecoder"]
