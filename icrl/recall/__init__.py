"""In-context recall (docs/science.md §R): task, data, model, metrics and the LightningModule."""

from icrl.recall.attention import Attention, LinearAttention, ReLUAttention, SoftmaxAttention
from icrl.recall.data import RecallDataModule, sample_recall
from icrl.recall.model import RecallOutput, RecallTransformer
from icrl.recall.module import RecallModule
from icrl.recall.parameterization import Origin, Parameterization, ParameterizationCallable, Reparam, ReparamW
from icrl.recall.task import RecallTask, entropy

__all__ = ["Attention", "LinearAttention", "ReLUAttention", "SoftmaxAttention", "RecallDataModule", "sample_recall",
           "RecallOutput", "RecallTransformer", "RecallModule", "Origin", "Parameterization",
           "ParameterizationCallable", "Reparam", "ReparamW", "RecallTask", "entropy"]
