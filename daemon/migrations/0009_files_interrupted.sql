-- Files a crash or a pause interrupted: their bytes already on the disk count for them.
CREATE INDEX files_interrupted ON files (job_id) WHERE state = 'pending' AND validator IS NOT NULL;
