"""Full sync: every person of an integration pushed again, in pages run in parallel by Step Functions.

The state machine (statemachines/full_sync.asl.json) calls `lifecycle` for its steps and `page` for each page
(its events: `steps`; `wiring` builds the `FullSync` the Lambdas and the CLI use, `sweep` is the cleanup's sweep);
`runs` holds the lock, the run and its progress counters, `parking` the real-time changes that wait for the end.
"""
