"""In-context recall (SPEC part R): task, data, model, metrics and the LightningModule."""

from icrl.recall.attention import ATTENTIONS, Attention, LinearAttention, ReLUAttention, SoftmaxAttention
from icrl.recall.callbacks import RecallEvaluation
from icrl.recall.data import RecallDataModule, sample_recall
from icrl.recall.model import RecallOutput, RecallTransformer
from icrl.recall.module import RecallModule
from icrl.recall.parameterization import PARAMETERIZATIONS, Origin, Parameterization, Reparam, ReparamW
from icrl.recall.task import RecallTask, entropy

__all__ = [
    "ATTENTIONS", "Attention", "LinearAttention", "ReLUAttention", "SoftmaxAttention", "RecallEvaluation",
    "RecallDataModule", "sample_recall", "RecallOutput", "RecallTransformer", "RecallModule",
    "PARAMETERIZATIONS", "Origin", "Parameterization", "Reparam", "ReparamW", "RecallTask", "entropy",
]
