"""One app per stack for `python -m bench.frameworks`, each checking the same things.

`common` holds what every stack shares (the token, the amount rule, the repeated-key check
and the account answer), so the stacks differ only in routing, validation and encoding.
"""
