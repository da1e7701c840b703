-- The patient's pseudonym on each received instance and study (dicom_nodes/db/ingest.py): the
-- receiver derives it with the site secret (dicom_nodes/deid/pseudonyms.py) so that every
-- per-instance audit event, from "received" on, names the patient by pseudonym and
-- `radiogate audit query --patient` finds the whole history. NULL for rows received before
-- this column existed or while no site secret was available.
ALTER TABLE ingest_instance ADD COLUMN patient_pseudonym text;
ALTER TABLE study ADD COLUMN patient_pseudonym text;
