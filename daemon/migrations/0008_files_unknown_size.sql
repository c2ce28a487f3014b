-- Whether a download's bytes_total is a total: the files whose size nobody knows yet.
CREATE INDEX files_unknown_size ON files (job_id) WHERE size IS NULL;
