"""pyradiomics' extractor with two changes, both through its documented extension points:

* **IBSI fixed-bin-size origin**: every grey-level feature class discretises with
  ``floor((x - origin) / binWidth) + 1`` where *origin* is the re-segmentation minimum (IBSI
  reference manual 2.7), by overriding ``_applyBinning`` (the hook pyradiomics' ``base.py``
  names for feature classes). pyradiomics numbers bins from the multiple of binWidth at or
  below the ROI minimum, which shifts every grey level when the ROI minimum lies a bin or more
  above the re-segmentation minimum. Fixed bin count is IBSI's already and left alone.
* **per-class failure**: a feature class that raises (a degenerate matrix, a ROI too thin for a
  shape) leaves its features missing with the reason, instead of losing the segment;
  pyradiomics itself already turns a single failing feature into NaN.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

import numpy as np
import radiomics  # type: ignore[import-untyped]
from radiomics import featureextractor

__all__ = ["Extractor", "class_feature_names"]

LOGGER = logging.getLogger(__name__)
# pyradiomics installs its own stderr handler at import; through its API, it prints errors only
# (its records still propagate to the logging configuration of the process)
radiomics.setVerbosity(logging.ERROR)
_BINNED = ("firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm")


def _ibsi_binned(base: type[Any]) -> type[Any]:
    class IbsiBinned(base):  # type: ignore[misc]
        def _applyBinning(self, matrix: Any) -> Any:  # noqa: N802 (pyradiomics' name)
            origin = self.settings.get("_radiogate_bin_origin")
            if origin is None or self.settings.get("binCount") is not None:
                return super()._applyBinning(matrix)
            width = float(self.settings.get("binWidth", 25))
            values = matrix[self.maskArray]
            bins = np.floor((values - origin) / width + 1e-9).astype(np.int64) + 1
            if bins.size and bins.min() < 1:
                raise ValueError(f"ROI intensity below the bin origin {origin}")
            out = np.zeros(matrix.shape, dtype=np.int64)
            out[self.maskArray] = bins
            self.coefficients["grayLevels"] = np.unique(bins)
            self.coefficients["Ng"] = int(bins.max())
            return out

    IbsiBinned.__name__ = f"IbsiBinned{base.__name__}"
    IbsiBinned.__module__ = base.__module__  # pyradiomics logs under its class's module
    return IbsiBinned


_CLASSES: dict[str, type[Any]] = {
    name: _ibsi_binned(cls) if name in _BINNED else cls
    for name, cls in radiomics.getFeatureClasses().items()
}


def class_feature_names(class_name: str, enabled: list[str] | None) -> list[str]:
    """The features a class computes for an ``enabledFeatures`` entry (all non-deprecated when
    the entry is empty)."""
    if enabled:
        return list(enabled)
    names: dict[str, bool] = _CLASSES[class_name].getFeatureNames()
    return [n for n, deprecated in names.items() if not deprecated]


class Extractor(featureextractor.RadiomicsFeatureExtractor):  # type: ignore[misc]
    """A ``RadiomicsFeatureExtractor`` with IBSI bin origin and per-class failure capture.
    ``bin_origin`` (None: pyradiomics' binning) is set per segment; failures land in
    ``failures`` (feature key -> reason) for the last :meth:`execute`."""

    def __init__(self, params: dict[str, Any]) -> None:
        super().__init__(params)
        self.bin_origin: float | None = None
        self.failures: dict[str, str] = {}

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        self.failures = {}
        return super().execute(*args, **kwargs)

    def _fail(self, prefix: str, class_name: str, error: Exception) -> None:
        reason = f"{type(error).__name__}: {error}"
        LOGGER.warning("feature class %s failed: %s", class_name, reason)
        for feature in class_feature_names(class_name, self.enabledFeatures.get(class_name)):
            self.failures[f"{prefix}_{class_name}_{feature}"] = reason

    def computeShape(self, image: Any, mask: Any, boundingBox: Any, **kwargs: Any) -> Any:  # noqa: N802, N803
        try:
            return super().computeShape(image, mask, boundingBox, **kwargs)
        except Exception as error:
            for name in ("shape", "shape2D"):
                if name in self.enabledFeatures:
                    self._fail("original", name, error)
            return OrderedDict()

    def computeFeatures(self, image: Any, mask: Any, imageTypeName: str, **kwargs: Any) -> Any:  # noqa: N802, N803
        vector: OrderedDict[str, Any] = OrderedDict()
        kwargs["_radiogate_bin_origin"] = self.bin_origin
        for class_name, features in self.enabledFeatures.items():
            if class_name.startswith("shape"):
                continue
            try:
                instance = _CLASSES[class_name](image, mask, **kwargs)
                for feature in features or []:
                    instance.enableFeatureByName(feature)
                for feature, value in instance.execute().items():
                    vector[f"{imageTypeName}_{class_name}_{feature}"] = value
            except Exception as error:
                self._fail(imageTypeName, class_name, error)
        return vector
