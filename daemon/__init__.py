"""bfd: the bulkforge daemon."""
