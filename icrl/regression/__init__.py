"""Template regression with representations (docs/science.md §T): data, models, closed-form references."""

from icrl.regression.data import TemplateRegressionDataModule
from icrl.regression.models import OneLayerMultiHead, TransformerBaseline
from icrl.regression.module import OneLayerRegression, TemplateRegressionModule, TransformerRegression
from icrl.regression.references import best_reference, ridge_predict, ridge_reference

__all__ = ["TemplateRegressionDataModule", "OneLayerMultiHead", "TransformerBaseline", "TemplateRegressionModule",
           "OneLayerRegression", "TransformerRegression", "ridge_predict", "ridge_reference", "best_reference"]
