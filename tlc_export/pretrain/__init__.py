"""Wall-clock-budgeted masked-LM pretraining (paper §2–3)."""

from tlc_export.pretrain.loop import PretrainData, pretrain_size
from tlc_export.pretrain.loss import MLMLoss, mlm_loss
from tlc_export.pretrain.schedule import lr_at

__all__ = ["MLMLoss", "PretrainData", "lr_at", "mlm_loss", "pretrain_size"]
