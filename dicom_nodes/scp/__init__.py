"""The Storage SCP: supervisor and receiver processes (``runner``), the AE and its contexts
(``app``), thin handlers (``handlers``), named statuses (``status``), the socket policy
(``transport``) and the receiver's metrics (``metrics``)."""

__all__ = ["app", "handlers", "metrics", "runner", "status", "transport"]
