"""All DynamoDB access: configs with history, per-person state and opt-outs, full-sync runs, parked changes, query
snapshots, the breaker's items and the shared APSIS budget. README.md here lists every item of both tables;
`protocols` is what the domain asks of them; `dynamo` is the one helper for values and paging."""
