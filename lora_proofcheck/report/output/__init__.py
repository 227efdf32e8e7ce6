"""What a report run writes: report.json (versioned schema, `schema`), report.md and a self-contained
report.html (`writers`), the PNG figures (`plots`), all into a folder published atomically (`publish`)."""
