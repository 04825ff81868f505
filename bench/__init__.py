"""`make bench`: the performance table of banking-es, each row beside its reference (README)."""
