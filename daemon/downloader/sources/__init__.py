"""Remote listings that become file entries: S3-compatible buckets, Hugging Face repos."""
