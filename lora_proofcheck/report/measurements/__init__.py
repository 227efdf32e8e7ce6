"""What the report measures: the property grid (`properties`), the phase-transition sweeps
(`sweeps`: the analytic cost frontier and the measured error blow-up) - both as sweep-engine cells -,
in-process timings (`timing`), the benchmark section (`benchmark`) and the recorded stress campaign
(`stress`)."""
