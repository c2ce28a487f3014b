"""The downloader pipeline: sources -> file rows -> verified files on disk."""
