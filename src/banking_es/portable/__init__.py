"""Moving a store between databases and backends through one portable file.

`tables` says what is exported, `fileformat` how it is written and checked, `dump` reads a
store into a file and `load` a file into an empty store. The CLI is `cli/portable.py`.
"""
