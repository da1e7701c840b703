"""The C-FIND identifier that confirms instances (PS3.4 C.6.2, Study Root, IMAGE level)."""

from __future__ import annotations

from pydicom.tag import Tag

from dicom_nodes.forward.query import image_query

UIDS = ["1.2.3.4", "1.2.3.5"]


def test_the_query_asks_for_the_class_by_default() -> None:
    ds = image_query(UIDS)
    assert ds.QueryRetrieveLevel == "IMAGE"
    assert list(ds.SOPInstanceUID) == UIDS  # list of UID matching (C.2.2.2.2)
    assert ds.SOPClassUID == ""  # a return key: the peer answers with the class it holds


def test_without_the_class_the_query_does_not_ask_for_it() -> None:
    """What costs Orthanc a read of each matched file is only the class: leave it out."""
    ds = image_query(UIDS, with_class=False)
    assert Tag("SOPClassUID") not in ds
    assert ds.SOPInstanceUID == UIDS
    assert image_query(UIDS[:1], with_class=False).SOPInstanceUID == UIDS[0]
