"""What the report measures: the property grid (`properties`), the phase-transition sweeps
(`sweeps`: the analytic cost frontier and the measured error blow-up), in-process timings
(`timing`) and the benchmark section (`benchmark`)."""
