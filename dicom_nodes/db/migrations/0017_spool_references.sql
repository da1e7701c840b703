-- A receiver that could not record an instance removes its spool file only once no row names
-- it (db/ingest.py, unreferenced): another association may have recorded identical bytes,
-- which share the content-addressed file. These indexes keep that question a lookup.
CREATE INDEX ingest_duplicate_spool ON ingest_duplicate (spool_path) WHERE bytes_differ;
CREATE INDEX deid_output_spool ON deid_output (spool_path);
