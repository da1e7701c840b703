"""The spool: structural inspection of received bytes (``inspect``) and the content-addressed
durable store (``store``). A leaf: it imports nothing of Radiogate's but ``dicom_nodes.errors``."""

__all__ = ["inspect", "store"]
