-- Why a forward item was cancelled, kept on the item (the audit trail has it per event too):
-- `admin-cancel`, `spool-file-missing` or `retention-expired` (dicom_nodes/state/repository.py,
-- the `cancelled` transition's assignment; cleared when the item is retried or renewed). A
-- re-send that brings back a lost spool file renews only the items the loss cancelled, never
-- one an administrator cancelled on purpose. Items cancelled before this column existed carry
-- '' (reason not recorded) and are not renewed by a re-send: an administrator retries them.
ALTER TABLE forward_item ADD COLUMN cancel_reason text NOT NULL DEFAULT '';
