"""One transfer engine for every kind: a shared connection budget, one HTTP client,
one classification of failures. See `engine.py`."""
