"""Radiomics and chest-CT measures: volumes from slices, lung segmentation, pyradiomics features
under an IBSI-compliant parameter set, and the mapping of features to DICOM concepts."""

__all__: list[str] = []
