"""Certification: the certified error bound of the approximate path.

`polynomial` (exp polynomials with a certified relative error), `certificate` (the data-dependent
bound on every gradient entry, step by step from F~ to dL/dA, dL/dB), `rounding` (its float rounding
floor), `degree` (the smallest degree whose certified bound meets a tolerance).
"""
