"""DICOM message encodings used on the C-STORE path, independent of how associations run.

:mod:`dicom_nodes.dimse.codec` packs and parses C-STORE command sets, File Meta Information and
P-DATA-TF PDUs directly, byte for byte as pynetdicom does.
"""

from __future__ import annotations

from dicom_nodes.dimse.codec import (
    NO_DATASET,
    PREAMBLE,
    Part10Meta,
    decode_store_rq,
    encode_file_meta,
    encode_p_data_tf,
    encode_store_rq,
    encode_store_rsp,
    parse_pdv_items,
    read_part10_meta,
    store_rq_primitive,
)

__all__ = [
    "NO_DATASET",
    "PREAMBLE",
    "Part10Meta",
    "decode_store_rq",
    "encode_file_meta",
    "encode_p_data_tf",
    "encode_store_rq",
    "encode_store_rsp",
    "parse_pdv_items",
    "read_part10_meta",
    "store_rq_primitive",
]
