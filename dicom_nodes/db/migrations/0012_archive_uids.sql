-- The UIDs a study and a series have in the archive (after de-identification, which replaces
-- them with keyed 2.25 UIDs unless the profile retains UIDs), so that the archive's plugin and
-- viewers find Radiogate's rows for what they show. Set when routing, from the route's first
-- destination's profile; NULL until then.
ALTER TABLE study ADD COLUMN archive_study_uid text;
ALTER TABLE series ADD COLUMN archive_series_uid text;
CREATE INDEX study_archive_uid ON study (archive_study_uid);
CREATE INDEX series_archive_uid ON series (archive_series_uid);
