"""Baselines the benchmark compares WISE with, on the same model, layer and data: FT-L and GRACE.

Both implement the interface `wise_gui.core.evaluation.evaluate` uses on a WiseEditor (see base.py).
"""

from wise_gui.core.baselines.base import EditResult, LayerMethod, TrainSettings
from wise_gui.core.baselines.ft_l import FineTuneLayer, FtSettings
from wise_gui.core.baselines.grace import Codebook, Grace, GraceSettings

BASELINES = {FineTuneLayer.name: (FineTuneLayer, FtSettings), Grace.name: (Grace, GraceSettings)}

__all__ = ["BASELINES", "Codebook", "EditResult", "FineTuneLayer", "FtSettings", "Grace", "GraceSettings",
           "LayerMethod", "TrainSettings"]
