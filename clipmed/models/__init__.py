"""clipmed models: Swin image encoder, BERT text encoder, report-graph encoder, the CLIP model.

  create_model(config.model, vocab_size=len(tokenizer)) -> CLIPModel
  CLIPModel.__call__(batch, *, train) -> {"image": [B,D], "text": [B,D], "logit_scale": scalar,
      and "graph" / "negative" when the batch has them}   (batch: clipmed/batch.py)
  CLIPModel.encode_image / encode_text / encode_graph (method= of apply): L2-normalised [B, D].
Pretrained weights: clipmed.models.pretrained (load_swin, load_bert, init_clip_params, ...).
"""

from clipmed.models.bert import BertEncoder, pool
from clipmed.models.clip import CLIPModel, create_model
from clipmed.models.swin import SwinTransformer

__all__ = ["BertEncoder", "CLIPModel", "SwinTransformer", "create_model", "pool"]
