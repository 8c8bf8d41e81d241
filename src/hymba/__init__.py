"""hymba: a configurable Hymba (hybrid attention + Mamba heads) language model and its design-roadmap ablation."""

from hymba.config import ModelConfig
from hymba.model import GraphedDecoder, HybridCache, HymbaLM, ModelOutput

__version__ = "0.1.0"
__all__ = ["ModelConfig", "HymbaLM", "HybridCache", "GraphedDecoder", "ModelOutput", "__version__"]
