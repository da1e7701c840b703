"""De-identification: DICOM PS3.15 Annex E profiles, keyed pseudonyms and the vault."""
