-- Claiming walks the pending files of a job's active batch, in id order.
CREATE INDEX files_by_batch ON files (job_id, batch_idx, state);
