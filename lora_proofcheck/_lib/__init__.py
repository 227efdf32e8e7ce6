"""Shared helpers of every stage (like SciPy's `_lib`): array-namespace helpers (`xp`), argument
validators (`validate`), the row-block policy and chunk runner (`blocks`), JSON conversion
(`jsonable`), environment facts (`envinfo`) and the one check-result record (`records`)."""
