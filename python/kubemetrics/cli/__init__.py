"""The `kubemetrics` command line, by job: `pflag` (argv scanning and Go-style value parsing),
`flags` (the flag table), `build` (parsed flags → a validated `Config`), `usage` (--help),
`main` (the console script)."""
