"""Radiomics and chest-CT measures, pure computation on arrays (no network, database or files
beyond the package's own parameter sets and code table):

* :mod:`.volume`: a CT volume in HU from its slices, with data-quality flags;
* :mod:`.lung`: classical left/right lung segmentation, lung volume, %LAA-950, Perc15, mean
  lung density;
* :mod:`.params`, :mod:`.preprocess`, :mod:`.features`: pyradiomics per segment under a versioned
  parameter set, on IBSI-interpolated crops, in a process pool;
* :mod:`.ibsi`: comparison with the IBSI chapter 1 reference values (docs/ibsi.md);
* :mod:`.codes`: pyradiomics features as DICOM concepts for TID 1500 measurements.
"""

from analysis.radiomics.codes import Measurement, measurements
from analysis.radiomics.features import Segment, SegmentFeatures, extract
from analysis.radiomics.lung import LungLabel, LungMeasures, lung_measures, segment_lungs
from analysis.radiomics.params import ParameterSet, load_parameters
from analysis.radiomics.volume import Geometry, QualityFlag, SliceInput, Volume, build_volume

__all__ = [
    "Geometry",
    "LungLabel",
    "LungMeasures",
    "Measurement",
    "ParameterSet",
    "QualityFlag",
    "Segment",
    "SegmentFeatures",
    "SliceInput",
    "Volume",
    "build_volume",
    "extract",
    "load_parameters",
    "lung_measures",
    "measurements",
    "segment_lungs",
]
