"""The scenes pipeline: item-level jobs whose every success and failure is recorded."""
