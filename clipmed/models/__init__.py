"""clipmed models: Swin image encoder, BERT text encoder, the CLIP dual encoder."""

from clipmed.models.bert import BertEncoder, pool
from clipmed.models.clip import CLIPModel, create_model, l2_normalize
from clipmed.models.swin import SwinTransformer

__all__ = ["BertEncoder", "CLIPModel", "SwinTransformer", "create_model", "l2_normalize", "pool"]
