"""clipmed models: Swin image encoder, BERT text encoder, the CLIP dual encoder.

  create_model(config.model, vocab_size=len(tokenizer)) -> CLIPModel
  CLIPModel.__call__(images [B,H,W,C], input_ids [B,L], attention_mask [B,L], *, train)
      -> {"image": [B,D], "text": [B,D], "logit_scale": scalar}   (rng stream "dropout" if train)
  CLIPModel.encode_image / encode_text (method= of apply), L2-normalised float32 [B, D].
Pretrained weights: clipmed.models.pretrained (load_swin, load_bert, init_clip_params, ...).
"""

from clipmed.models.bert import BertEncoder, pool
from clipmed.models.clip import CLIPModel, create_model, l2_normalize
from clipmed.models.swin import SwinTransformer

__all__ = ["BertEncoder", "CLIPModel", "SwinTransformer", "create_model", "l2_normalize", "pool"]
